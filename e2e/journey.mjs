// The partner's journey in a real browser, against a real `keyward serve` whose emails go
// to a real SMTP server (Python's aiosmtpd):
//   onboarding email -> link page -> wrong code (422) -> partner code -> keys read off the
//   page -> signed WhoAmI -> regeneration email -> link page -> new keys -> old key refused
//   -> regeneration with a 24 h overlap -> both pairs work, the old one with
//   Keyward-Key-Expires -> RetireOldKeys ends it.
// Screenshots of the link page, the reveal page and an error page, at desktop size and at
// 375 px wide, go to target/e2e/.
//
//   node e2e/journey.mjs        (KEYWARD_BIN and CHROMIUM override the defaults)
import { spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const keyward = process.env.KEYWARD_BIN ?? path.join(root, "target/debug/keyward");
const shots = path.join(root, "target/e2e");
const work = fs.mkdtempSync(path.join(os.tmpdir(), "keyward-e2e-"));
const children = [];
let failed = false;
let passed = 0;

function check(condition, what) {
  if (!condition) throw new Error(`check failed: ${what}`);
  passed += 1;
  console.log(`ok - ${what}`);
}

function freePort() {
  return new Promise((resolve) => {
    const server = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

async function waitFor(what, probe, seconds = 20) {
  const end = Date.now() + seconds * 1000;
  while (Date.now() < end) {
    const value = await probe();
    if (value) return value;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

function start(command, args, env) {
  const child = spawn(command, args, { env: { ...process.env, ...env }, stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  child.stderr.on("data", (d) => (log += d));
  child.log = () => log;
  children.push(child);
  return child;
}

// The one-time link in the newest email to `to` that we have not used yet.
const seen = new Set();
function linkInMaildir(maildir, to) {
  const dir = path.join(maildir, "new");
  if (!fs.existsSync(dir)) return null;
  for (const name of fs.readdirSync(dir)) {
    // Undo quoted-printable soft line breaks and escapes, in case a long line was wrapped.
    const raw = fs.readFileSync(path.join(dir, name), "utf8").replace(/=\r?\n/g, "").replace(/=3D/g, "=");
    if (!raw.includes(`To: ${to}`)) continue;
    const link = raw.match(/https?:\/\/\S+\/link\/[A-Za-z0-9_-]{43}/)?.[0];
    if (link && !seen.has(link)) {
      seen.add(link);
      return link;
    }
  }
  return null;
}

function sign(body, secretKey) {
  body.signature = crypto.createHmac("sha512", secretKey).update(JSON.stringify(body)).digest("hex");
  return JSON.stringify(body);
}

async function post(base, route, body, publicKey) {
  const headers = { "Content-Type": "application/json" };
  if (publicKey) headers.Authorization = `Bearer ${publicKey}`;
  const response = await fetch(base + route, { method: "POST", headers, body });
  return { status: response.status, json: await response.json() };
}

async function screenshots(page, name) {
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.screenshot({ path: path.join(shots, `${name}-desktop.png`), fullPage: true });
  await page.setViewportSize({ width: 375, height: 812 });
  await page.screenshot({ path: path.join(shots, `${name}-375.png`), fullPage: true });
  // Nothing may stick out sideways on a phone.
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 0, `${name}: no horizontal scrolling at 375 px`);
  await page.setViewportSize({ width: 1280, height: 800 });
}

async function keysOnPage(page) {
  return {
    partnerId: await page.inputValue("#partner_id"),
    publicKey: await page.inputValue("#public_key"),
    secretKey: await page.inputValue("#secret_key"),
  };
}

async function main() {
  fs.mkdirSync(shots, { recursive: true });
  const smtpPort = await freePort();
  const httpPort = await freePort();
  const maildir = path.join(work, "maildir");
  start("python3", ["-m", "aiosmtpd", "-n", "-l", `127.0.0.1:${smtpPort}`, "-c", "aiosmtpd.handlers.Mailbox", maildir]);
  await waitFor("the SMTP server", () => new Promise((resolve) => {
    const socket = net.connect(smtpPort, "127.0.0.1", () => { socket.end(); resolve(true); });
    socket.on("error", () => resolve(false));
  }));
  const base = `http://127.0.0.1:${httpPort}`;
  const server = start(keyward, ["serve"], {
    KEYWARD_LISTEN: `127.0.0.1:${httpPort}`,
    KEYWARD_DATA_DIR: path.join(work, "data"),
    KEYWARD_SMTP_URL: `smtp://127.0.0.1:${smtpPort}`,
  });
  await waitFor("keyward", async () => (await fetch(`${base}/healthz`).catch(() => null))?.ok);

  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
      "--disable-sync", "--no-first-run", "--disable-quic"],
  });
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: base });
    const page = await context.newPage();

    // 1. Onboarding: the email arrives at the SMTP server.
    const onboard = await post(base, "/api/v1/no-auth/PartnerP2P/OnboardPartner", JSON.stringify({ partner_code: "ACME", email: "ops@acme.example" }));
    check(onboard.status === 200, "onboarding accepted");
    const link = await waitFor("the onboarding email", () => linkInMaildir(maildir, "ops@acme.example"));
    check(link.startsWith(`${base}/link/`), "the emailed link points at the public URL");

    // 2. The link page: it asks for the partner code and changes nothing.
    let response = await page.goto(link);
    check(response.status() === 200, "the link page opens");
    check(response.headers()["cache-control"] === "no-store", "the page is not cached");
    await page.reload();
    check((await page.textContent("h1")).includes("Get your API keys"), "the page says what the link does");
    await screenshots(page, "interstitial");

    // 3. A wrong code: 422, the page again, nothing used.
    await page.fill("#partner_code", "WRONG");
    [response] = await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
    check(response.status() === 422, "a wrong partner code gets 422");
    check((await page.textContent("[role=alert]")).includes("does not match"), "the page says the code does not match");
    await screenshots(page, "wrong-code");

    // 4. The right code: the keys, once.
    await page.fill("#partner_code", "acme");
    [response] = await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
    check(response.status() === 200, "the right partner code reveals the keys");
    const first = await keysOnPage(page);
    check(/^pk_partner_[0-9A-Za-z]{36}$/.test(first.publicKey) && /^sk_partner_[0-9A-Za-z]{36}$/.test(first.secretKey), "the keys are on the page");
    check((await page.textContent(".warning")).includes("not shown again"), "the page warns that the keys are shown once");
    await page.click("button[data-copy=secret_key]");
    check((await page.evaluate(() => navigator.clipboard.readText())) === first.secretKey, "the copy button copies the secret key");
    await screenshots(page, "reveal");

    // 5. The keys sign a request.
    let who = await post(base, "/api/v1/PartnerP2P/WhoAmI", sign({ timestamp: Date.now() }, first.secretKey), first.publicKey);
    check(who.status === 200 && who.json.data.partner_id === first.partnerId, "the revealed keys sign a WhoAmI that succeeds");

    // 6. The used link is gone: an error page.
    response = await page.goto(link);
    check(response.status() === 410, "the used link answers 410");
    check((await page.textContent("h1")).includes("already used"), "the error page says the link was used");
    await screenshots(page, "error-used");

    // 7. Regeneration, through the emailed link in the browser.
    const regen = await post(base, "/api/v1/no-auth/PartnerP2P/GenKeysForPartner",
      sign({ email: "ops@acme.example", partner_code: "ACME" }, first.secretKey), first.publicKey);
    check(regen.status === 200, "regeneration requested with the signed body");
    const regenLink = await waitFor("the regeneration email", () => linkInMaildir(maildir, "ops@acme.example"));
    response = await page.goto(regenLink);
    check((await page.textContent("h1")).includes("Regenerate"), "the regeneration page says what it does");
    await screenshots(page, "interstitial-regeneration");
    who = await post(base, "/api/v1/PartnerP2P/WhoAmI", sign({}, first.secretKey), first.publicKey);
    check(who.status === 200, "the old keys still work until the link is used");
    await page.fill("#partner_code", "ACME");
    [response] = await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
    check(response.status() === 200, "the regeneration link reveals new keys");
    const second = await keysOnPage(page);
    check(second.partnerId === first.partnerId, "the partner ID is unchanged");
    check(second.publicKey !== first.publicKey, "the public key is new");

    who = await post(base, "/api/v1/PartnerP2P/WhoAmI", sign({}, first.secretKey), first.publicKey);
    check(who.status === 401 && who.json.code === "revoked_key", "the old key is refused: revoked_key");
    who = await post(base, "/api/v1/PartnerP2P/WhoAmI", sign({}, second.secretKey), second.publicKey);
    check(who.status === 200, "the new keys work");
    const notice = await waitFor("the regeneration notice", () => {
      const dir = path.join(maildir, "new");
      return fs.readdirSync(dir).map((n) => fs.readFileSync(path.join(dir, n), "utf8")).find((m) => m.includes("were regenerated"));
    });
    check(notice.includes("127.0.0.1"), "the regeneration notice names the IP");

    // 8. Rotation without an outage: a regeneration with a 24 h overlap.
    const overlap = await post(base, "/api/v1/no-auth/PartnerP2P/GenKeysForPartner",
      sign({ email: "ops@acme.example", partner_code: "ACME", overlap_seconds: 86400, timestamp: Date.now() }, second.secretKey), second.publicKey);
    check(overlap.status === 200 && overlap.json.message.includes("1 day"), "a regeneration with a 24 h overlap is accepted");
    const overlapLink = await waitFor("the overlap regeneration email", () => linkInMaildir(maildir, "ops@acme.example"));
    response = await page.goto(overlapLink);
    check((await page.textContent("#old-keys")).includes("keep working for 1 day after you press the button"),
      "the link page says the current keys keep working for 1 day");
    await screenshots(page, "interstitial-overlap");
    await page.fill("#partner_code", "ACME");
    [response] = await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
    check(response.status() === 200, "the overlap link reveals new keys");
    check((await page.textContent("#old-keys")).includes("keep working until"), "the reveal page says until when the old keys work");
    await screenshots(page, "reveal-overlap");
    const third = await keysOnPage(page);
    const whoOld = await fetch(`${base}/api/v1/PartnerP2P/WhoAmI`, {
      method: "POST", headers: { "Content-Type": "application/json", Authorization: `Bearer ${second.publicKey}` },
      body: sign({ timestamp: Date.now() }, second.secretKey),
    });
    const expires = whoOld.headers.get("keyward-key-expires");
    const hoursLeft = (Date.parse(expires) - Date.now()) / 3600e3;
    check(whoOld.status === 200 && hoursLeft > 23.9 && hoursLeft <= 24, `the old pair still works and says it expires in 24 h (${expires})`);
    check((await whoOld.json()).data.key_expires_at === expires, "WhoAmI's key_expires_at matches the header");
    who = await post(base, "/api/v1/PartnerP2P/WhoAmI", sign({ timestamp: Date.now() }, third.secretKey), third.publicKey);
    check(who.status === 200 && who.json.data.key_expires_at === null, "the new pair works and is not retiring");
    const retire = await post(base, "/api/v1/PartnerP2P/RetireOldKeys", sign({ timestamp: Date.now() }, third.secretKey), third.publicKey);
    check(retire.status === 200 && retire.json.data.revoked === 1, "RetireOldKeys revokes the retiring pair");
    who = await post(base, "/api/v1/PartnerP2P/WhoAmI", sign({ timestamp: Date.now() }, second.secretKey), second.publicKey);
    check(who.status === 401 && who.json.code === "revoked_key", "the retired pair is refused at once");
    console.log(`screenshots in ${shots}`);
  } finally {
    await browser.close();
    if (failed) console.error(server.log());
  }
}

main()
  .catch((error) => {
    failed = true;
    console.error(error);
    for (const child of children) if (child.log) console.error(child.log());
    process.exitCode = 1;
  })
  .finally(() => {
    for (const child of children) child.kill("SIGKILL");
    fs.rmSync(work, { recursive: true, force: true });
    console.log(`${passed} passed, ${failed ? 1 : 0} failed`);
  });
