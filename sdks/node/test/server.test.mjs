// The package against a real `keyward serve`: onboarding through the mailbox, redeem, WhoAmI,
// regeneration with an overlap, lost keys, the allow-list lock-out, stale_request with a skewed
// clock, the verify API and its middleware (node:http and Express), and the gateway.
import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { after, before, test } from "node:test";
import express from "express";
import { KeywardError, PartnerClient, Verifier, verifyMiddleware } from "keyward-partner";
import { startKeyward } from "./keyward.mjs";

let keyward;
let upstream;
let upstreamUrl;

function listen(server) {
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => resolve(`http://127.0.0.1:${server.address().port}`));
  });
}

before(async () => {
  // The payment API behind the gateway: says who keyward said the partner is.
  upstream = http.createServer((req, res) => {
    res.setHeader("Content-Type", "application/json");
    res.end(JSON.stringify({ paid_to: req.headers["keyward-partner-id"], path: req.url }));
  });
  upstreamUrl = await listen(upstream);
  keyward = await startKeyward({ KEYWARD_UPSTREAM_URL: upstreamUrl });
});

after(() => {
  keyward?.stop();
  upstream?.close();
});

let partners = 0;
/** A partner onboarded through the mailbox, and its client. */
async function onboarded(options = {}) {
  partners += 1;
  const code = `NODE-${process.pid}-${partners}`;
  const email = `ops-${process.pid}-${partners}@node.example`;
  await PartnerClient.onboard(keyward.url, { partnerCode: code, email });
  const credentials = await PartnerClient.redeem(keyward.url, await keyward.link(email), code);
  const client = new PartnerClient({ baseUrl: keyward.url, ...credentials, ...options });
  return { code, email, credentials, client };
}

async function rejection(promise) {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof KeywardError, String(error));
    return error;
  }
  assert.fail("expected a KeywardError");
}

test("onboard, redeem and WhoAmI", async () => {
  const { code, credentials, client } = await onboarded();
  assert.match(credentials.publicKey, /^pk_partner_/);
  assert.match(credentials.secretKey, /^sk_partner_/);
  assert.equal(credentials.partnerCode, code);
  const me = await client.whoAmI();
  assert.equal(me.partner_id, credentials.partnerId);
  assert.equal(me.partner_code, code);
  assert.equal(me.key_expires_at, null);
  const time = await client.time();
  assert.ok(Math.abs(time.server_time_ms - Date.now()) < 60_000);
});

test("regeneration with an overlap, then RetireOldKeys", async () => {
  const { code, email, credentials, client } = await onboarded();
  const message = await client.regenerate({ email, partnerCode: code, overlapSeconds: 3600 });
  assert.match(message, /emailed/);
  const renewed = await PartnerClient.redeem(keyward.url, await keyward.link(email, 2), code);
  assert.equal(renewed.partnerId, credentials.partnerId);
  // The old pair still works, as a retiring pair, but does not manage the account.
  const old = await client.whoAmI();
  assert.ok(old.key_expires_at);
  const refused = await rejection(client.retireOldKeys());
  assert.equal(refused.status, 403);
  assert.equal(refused.code, "key_retiring");
  const current = new PartnerClient({ baseUrl: keyward.url, ...renewed });
  assert.deepEqual(await current.retireOldKeys(), { revoked: 1 });
  const revoked = await rejection(client.whoAmI());
  assert.equal(revoked.code, "revoked_key");
});

test("lost keys: the same answer either way, and a link to the registered address", async () => {
  const { code, email } = await onboarded();
  const matching = await PartnerClient.lostKeys(keyward.url, { email, partnerCode: code });
  const unknown = await PartnerClient.lostKeys(keyward.url, { email: "x@nowhere.example", partnerCode: "NOBODY" });
  assert.equal(matching, unknown);
  const link = await keyward.link(email, 2);
  const renewed = await PartnerClient.redeem(keyward.url, link, code);
  assert.ok((await new PartnerClient({ baseUrl: keyward.url, ...renewed }).whoAmI()).partner_id);
});

test("the allow-list refuses a lock-out unless confirmed", async () => {
  const { client } = await onboarded();
  const refused = await rejection(client.setAllowedIps(["203.0.113.7"]));
  assert.equal(refused.status, 422);
  assert.equal(refused.code, "would_lock_out");
  assert.deepEqual(await client.setAllowedIps(["127.0.0.1", "198.51.100.7/24"]), {
    allowed_ips: ["127.0.0.1", "198.51.100.0/24"],
  });
  await client.setAllowedIps(["203.0.113.7"], { confirmLockOut: true });
  const locked = await rejection(client.whoAmI());
  assert.equal(locked.code, "ip_not_allowed");
});

test("a skewed clock is corrected once from stale_request", async () => {
  const skew = 10 * 60_000;
  const { client, credentials } = await onboarded({ now: () => Date.now() - skew });
  const me = await client.whoAmI();
  assert.equal(me.partner_id, credentials.partnerId);
  assert.ok(Math.abs(client.clockOffsetMs - skew) < 60_000, String(client.clockOffsetMs));
  const strict = new PartnerClient({
    baseUrl: keyward.url,
    ...credentials,
    clockSync: false,
    now: () => Date.now() - skew,
  });
  const stale = await rejection(strict.whoAmI());
  assert.equal(stale.code, "stale_request");
  assert.equal(typeof stale.data.skew_ms, "number");
});

test("the gateway forwards a signed request to the payment API", async () => {
  const { client, credentials } = await onboarded();
  const answer = await client.request("/api/v1/PartnerP2P/Payout?ref=1", { amount: "10.50" });
  assert.deepEqual(answer, { paid_to: credentials.partnerId, path: "/api/v1/PartnerP2P/Payout?ref=1" });
});

test("a test pair: createKey, redeem, listKeys, the gateway refuses it without a sandbox, revokeKey", async () => {
  const { code, email, client } = await onboarded();
  const message = await client.createKey({ name: "laptop", mode: "test", expiresInDays: 30 });
  assert.match(message, /email/i);
  const test = await PartnerClient.redeem(keyward.url, await keyward.link(email, 2), code);
  assert.match(test.publicKey, /^pk_test_partner_/);
  assert.match(test.secretKey, /^sk_test_partner_/);
  const laptop = new PartnerClient({ baseUrl: keyward.url, ...test });
  const me = await laptop.whoAmI();
  assert.equal(me.kind, "restricted");
  assert.equal(me.name, "laptop");
  assert.equal(me.mode, "test");
  assert.ok(me.key_expires_at, "a 30-day key says when it expires");
  // Never forwarded to the live payment API.
  const refused = await rejection(laptop.request("/api/v1/PartnerP2P/Payout", { amount: "1" }));
  assert.equal(refused.status, 403);
  assert.equal(refused.code, "test_key_not_accepted");
  // Only the primary pair manages keys.
  assert.equal((await rejection(laptop.listKeys())).code, "insufficient_scope");

  const keys = await client.listKeys();
  assert.deepEqual(keys.map((k) => k.kind).sort(), ["primary", "restricted"]);
  const entry = keys.find((k) => k.kind === "restricted");
  assert.ok(!JSON.stringify(keys).includes(test.publicKey), "never a whole public key");
  assert.deepEqual(await client.revokeKey(entry.key_id), { revoked: 1 });
  assert.equal((await rejection(laptop.whoAmI())).code, "revoked_key");
  // A live client refuses a live public key with a test secret key before sending anything.
  assert.throws(() => new PartnerClient({ baseUrl: keyward.url, publicKey: client.publicKey, secretKey: test.secretKey }), TypeError);
});

test("the verify API and its middleware, behind node:http and Express", async () => {
  const { client, credentials } = await onboarded();
  const token = keyward.operator(["service-token", "create", `node-${process.pid}`]);
  const verifier = new Verifier({ url: keyward.internalUrl, token });

  const raw = JSON.stringify({ amount: "1", signature: "0".repeat(128) });
  const direct = await verifier.verify({ authorization: `Bearer ${credentials.publicKey}`, body: raw, clientIp: "127.0.0.1" });
  assert.equal(direct.valid, false);
  assert.equal(direct.error.code, "invalid_signature");

  const guard = verifyMiddleware(verifier);
  const plain = http.createServer((req, res) =>
    guard(req, res, () => {
      res.setHeader("Content-Type", "application/json");
      res.end(JSON.stringify({ paid_to: req.keyward.partnerId, raw: req.rawBody.length }));
    }),
  );
  const app = express();
  app.post("/pay", verifyMiddleware(verifier), (req, res) => res.json({ paid_to: req.keyward.partnerId }));
  const servers = [plain, http.createServer(app)];
  const urls = [await listen(servers[0]), `${await listen(servers[1])}/pay`];
  try {
    for (const url of urls) {
      const service = new PartnerClient({ baseUrl: url, ...credentials });
      const paid = await service.request("", { payout: url });
      assert.equal(paid.paid_to, credentials.partnerId);
      // Relayed unchanged: a bad signature, and the same signed payout twice.
      const body = { payout: `again ${url}`, timestamp: Date.now() };
      const signedOnce = await service.request("", body);
      assert.equal(signedOnce.paid_to, credentials.partnerId);
      const replayed = await rejection(service.request("", body));
      assert.equal(replayed.status, 409);
      assert.equal(replayed.code, "replayed_request");
      const forged = await fetch(url, {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: `Bearer ${credentials.publicKey}` },
        body: raw,
      });
      assert.equal(forged.status, 401);
      assert.equal((await forged.json()).code, "invalid_signature");
    }
  } finally {
    servers.forEach((s) => s.close());
  }
  void client;
});

test("the payout service example (examples/payout_service.mjs) on the middleware", async () => {
  const { spawn } = await import("node:child_process");
  const fs = await import("node:fs");
  const os = await import("node:os");
  const path = await import("node:path");
  const { fileURLToPath } = await import("node:url");
  const here = path.dirname(fileURLToPath(import.meta.url));
  // As a user would have it: the package installed beside the service.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "keyward-example-"));
  fs.mkdirSync(path.join(dir, "node_modules"));
  fs.symlinkSync(path.resolve(here, ".."), path.join(dir, "node_modules", "keyward-partner"));
  fs.copyFileSync(path.resolve(here, "../../../examples/payout_service.mjs"), path.join(dir, "payout_service.mjs"));
  const { credentials } = await onboarded();
  const token = keyward.operator(["service-token", "create", `node-example-${process.pid}`]);
  const child = spawn("node", [path.join(dir, "payout_service.mjs")], {
    env: { ...process.env, PORT: "0", KEYWARD_INTERNAL_URL: keyward.internalUrl, KEYWARD_SERVICE_TOKEN: token },
    stdio: ["ignore", "pipe", "inherit"],
  });
  try {
    const url = await new Promise((resolve) => child.stdout.once("data", (line) => resolve(String(line).trim().split(" ").pop())));
    const service = new PartnerClient({ baseUrl: url, ...credentials });
    const paid = await service.request("/", { amount: "10.50" });
    assert.deepEqual(paid.data, { partner_id: credentials.partnerId, amount: "10.50" });
    const replay = { amount: "1", timestamp: Date.now() };
    await service.request("/", replay);
    const again = await rejection(service.request("/", replay));
    assert.equal(again.code, "replayed_request");
  } finally {
    child.kill();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("a partner moved in with legacy keys signs with them when legacyKeys is set", async () => {
  const code = `LEGACY-${process.pid}`;
  const publicKey = `pk_partner_Legacy${process.pid}Node`;
  const secretKey = `sk_partner_Legacy${process.pid}Secret`;
  const file = path.join(keyward.dataDir, "import.jsonl");
  fs.writeFileSync(file, JSON.stringify({ partner_code: code, email: `${code}@node.example`, public_key: publicKey, secret_key: secretKey }) + "\n");
  const report = keyward.operator(["partner", "import", file]);
  assert.match(report, /1 imported \(1 with legacy keys\)/);
  assert.ok(!report.includes(secretKey), "the import printed a key");
  assert.throws(() => new PartnerClient({ baseUrl: keyward.url, publicKey, secretKey }), /publicKey/);
  const client = new PartnerClient({ baseUrl: keyward.url, publicKey, secretKey, legacyKeys: true });
  const me = await client.whoAmI();
  assert.equal(me.partner_code, code);
  const [key] = await client.listKeys();
  assert.equal(key.legacy, true);
});
