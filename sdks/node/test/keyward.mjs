// Starts a real `keyward serve` for the tests (the binary of this repository: KEYWARD_BIN, or
// target/debug/keyward), with its own data folder, and reads the emails it writes there.
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
export const binary = process.env.KEYWARD_BIN ?? path.join(root, "target/debug/keyward");
export const vectorsFile = path.join(root, "testdata/signatures.json");

export async function freePort() {
  return new Promise((resolve) => {
    const server = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

export async function startKeyward(extraEnv = {}) {
  if (!fs.existsSync(binary)) {
    throw new Error(`no keyward binary at ${binary}: run \`cargo build\` first, or set KEYWARD_BIN`);
  }
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "keyward-node-"));
  const [port, internal] = [await freePort(), await freePort()];
  const env = {
    ...process.env,
    KEYWARD_DATA_DIR: dataDir,
    KEYWARD_LISTEN: `127.0.0.1:${port}`,
    KEYWARD_INTERNAL_LISTEN: `127.0.0.1:${internal}`,
    KEYWARD_KEY_CACHE_MS: "100",
    ...extraEnv,
  };
  const child = spawn(binary, ["serve"], { env, stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  child.stderr.on("data", (chunk) => (log += chunk));
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(`${url}/healthz`)).ok) break;
    } catch {
      // not up yet
    }
    if (i > 100) throw new Error(`keyward did not start:\n${log}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url,
    internalUrl: `http://127.0.0.1:${internal}`,
    dataDir,
    env,
    /** Runs an operator command (`keyward service-token create …`) on the same data. */
    operator(args) {
      const out = spawnSync(binary, args, { env, encoding: "utf8" });
      if (out.status !== 0) throw new Error(`keyward ${args.join(" ")}: ${out.stderr}`);
      return out.stdout.trim();
    },
    /** The newest one-time link emailed to `to`, once `count` emails reached that address. */
    async link(to, count = 1) {
      const mailbox = path.join(dataDir, "mailbox");
      for (let i = 0; i < 100; i++) {
        const emails = fs.existsSync(mailbox)
          ? fs
              .readdirSync(mailbox)
              .map((name) => path.join(mailbox, name))
              .filter((file) => fs.readFileSync(file, "utf8").includes(to))
              .sort((a, b) => fs.statSync(a).mtimeMs - fs.statSync(b).mtimeMs)
          : [];
        if (emails.length >= count) {
          const text = fs.readFileSync(emails[emails.length - 1], "utf8").replace(/=\r?\n/g, "");
          const match = text.match(new RegExp(`${url}/link/[A-Za-z0-9_-]{43}`));
          if (match) return match[0];
        }
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error(`no email number ${count} to ${to}`);
    },
    stop() {
      child.kill();
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
