// Every case of testdata/signatures.json (generated with Node's own crypto and JSON) through
// sign/signCanonical from the parsed body, and every key-format case.
import assert from "node:assert/strict";
import fs from "node:fs";
import test from "node:test";
import { isWellFormedKey, message, messageCanonical, sign, signCanonical } from "keyward-partner";
import { vectorsFile } from "./keyward.mjs";

const vectors = JSON.parse(fs.readFileSync(vectorsFile, "utf8"));

for (const c of vectors.signature_cases.filter((c) => c.message_as_sent !== undefined)) {
  test(`signature case: ${c.name}`, () => {
    // What was signed (the template, before any mutation), parsed as a client holds it.
    const signed = JSON.parse(c.template ?? c.body);
    assert.equal(message(signed), c.message_as_sent);
    assert.equal(messageCanonical(signed), c.message_jcs);
    const sent = JSON.parse(c.body);
    const form = c.signed_form === "jcs" ? signCanonical : sign;
    if (c.expect === "valid") assert.equal(form(sent, c.secret_key), sent.signature.toLowerCase());
    if (c.expect === "invalid_signature") {
      assert.notEqual(form(sent, c.secret_key), String(sent.signature).toLowerCase());
    }
  });
}

test("key-format cases", () => {
  for (const { key, valid } of vectors.key_format_cases) {
    const prefix = key.startsWith("pk_") ? "pk_partner_" : "sk_partner_";
    assert.equal(isWellFormedKey(key, prefix), valid, key);
  }
});
