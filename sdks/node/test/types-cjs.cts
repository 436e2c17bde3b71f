// Compiled by `npm test` (tsc --noEmit): the CommonJS types as well.
import keyward = require("keyward-partner");

const signature: string = keyward.sign({ a: 1 }, "sk_partner_x");
const client = new keyward.PartnerClient({ baseUrl: "http://x", publicKey: "pk", secretKey: "sk" });
void client.whoAmI().then((me) => console.log(signature, me.partner_code));
void client.listKeys().then((keys: keyward.KeyInfo[]) => console.log(keys[0].state, keys[0].mode));
void client.createKey({ name: "reports", scopes: ["reports:read"] });
