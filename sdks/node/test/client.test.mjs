// The client's own behaviour, against a stand-in server: retries of 429 and 503 (bounded, after
// Retry-After), errors in the spec's envelope, and keys checked before anything is sent.
import assert from "node:assert/strict";
import http from "node:http";
import test from "node:test";
import { KeywardError, PartnerClient, Verifier } from "keyward-partner";

const PUBLIC = "pk_partner_BSB8wIYc6sE7hIysyRYv9Z0oCJif3k38fgkq";
const SECRET = "sk_partner_fbi9lNL7GCHyd6uQEMDFGH19bSqMwB2OfotK";

async function standIn(answers) {
  const seen = [];
  const server = http.createServer((req, res) => {
    seen.push(req.url);
    const [status, body, headers = {}] = answers[Math.min(seen.length - 1, answers.length - 1)];
    res.writeHead(status, { "Content-Type": "application/json", ...headers });
    res.end(JSON.stringify(body));
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return { url: `http://127.0.0.1:${server.address().port}`, seen, close: () => server.close() };
}

const busy = { success: false, message: "Too many requests.", data: null, code: "rate_limited" };
const ok = { success: true, message: "ok", data: { partner_id: "p" } };

test("429 and 503 are retried after Retry-After, a bounded number of times", async () => {
  const server = await standIn([[429, busy, { "Retry-After": "1" }], [503, busy], [200, ok]]);
  try {
    const client = new PartnerClient({ baseUrl: server.url, publicKey: PUBLIC, secretKey: SECRET });
    const started = Date.now();
    assert.deepEqual(await client.whoAmI(), { partner_id: "p" });
    assert.equal(server.seen.length, 3);
    assert.ok(Date.now() - started >= 1000, "waited what Retry-After said");
  } finally {
    server.close();
  }
  const always = await standIn([[503, { ...busy, code: "unavailable" }]]);
  try {
    const client = new PartnerClient({ baseUrl: always.url, publicKey: PUBLIC, secretKey: SECRET });
    await assert.rejects(client.whoAmI(), (e) => e instanceof KeywardError && e.status === 503 && e.code === "unavailable");
    assert.equal(always.seen.length, 4, "the first attempt and three retries");
  } finally {
    always.close();
  }
});

test("malformed keys and tokens are refused before anything is sent", () => {
  assert.throws(() => new PartnerClient({ baseUrl: "http://x", publicKey: PUBLIC.slice(0, -1), secretKey: SECRET }), /publicKey/);
  assert.throws(() => new PartnerClient({ baseUrl: "http://x", publicKey: PUBLIC, secretKey: PUBLIC }), /secretKey/);
  assert.throws(() => new Verifier({ url: "http://x", token: "Bearer nope" }), /service token/);
});
