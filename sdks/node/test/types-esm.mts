// Compiled by `npm test` (tsc --noEmit): the ESM types describe the API as documented.
import keyward, { PartnerClient, Verifier, KeywardError, sign, signCanonical, verifyMiddleware } from "keyward-partner";
import type { Credentials, KeyInfo, KeyMode, WhoAmI, Verification } from "keyward-partner";
import http from "node:http";

const signature: string = sign({ amount: "1.50" }, "sk_partner_x");
const canonical: string = signCanonical({ b: 1, a: 2 }, "sk_partner_x");
async function use(): Promise<void> {
  const client = new PartnerClient({ baseUrl: "http://127.0.0.1:8080", publicKey: "pk", secretKey: "sk" });
  const me: WhoAmI = await client.whoAmI();
  const message: string = await client.regenerate({ email: "a@b.c", partnerCode: "ACME", overlapSeconds: 3600 });
  const retired: { revoked: number } = await client.retireOldKeys();
  await client.setAllowedIps(["203.0.113.7"], { confirmLockOut: true });
  const asked: string = await client.createKey({ name: "reports", scopes: ["reports:read"], mode: "test", expiresInDays: 30 });
  const keys: KeyInfo[] = await client.listKeys();
  const revoked: { revoked: number } = await client.revokeKey(keys[0].key_id);
  const mode: KeyMode = me.mode;
  console.log(asked, revoked.revoked, mode, me.scopes, keys[0].expires_at);
  const credentials: Credentials = await PartnerClient.redeem("http://x", "token", "ACME");
  await PartnerClient.lostKeys("http://x", { email: "a@b.c", partnerCode: "ACME" });
  const verifier = new Verifier({ url: "http://127.0.0.1:8081", token: "kw_service_x" });
  const verdict: Verification = await verifier.verify({ authorization: "Bearer pk", body: "{}", clientIp: "127.0.0.1", singleUse: true });
  if (verdict.valid) console.log(verdict.partner_id);
  else console.log(verdict.error.code);
  const guard = verifyMiddleware(verifier);
  http.createServer((req, res) => guard(req, res, () => res.end(req.keyward?.partnerId)));
  try {
    await client.request("/api/v1/PartnerP2P/Payout", { amount: "10" });
  } catch (error) {
    if (error instanceof KeywardError) console.log(error.status, error.code, error.data);
  }
  console.log(signature, canonical, me.partner_id, message, retired.revoked, credentials.secretKey, keyward.sign);
}
void use;
