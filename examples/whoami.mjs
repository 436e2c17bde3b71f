// Node.js: sign a body with node:crypto and call WhoAmI.
import crypto from "node:crypto";

const url = process.env.KEYWARD_URL ?? "http://127.0.0.1:8080";
const publicKey = process.env.KEYWARD_PUBLIC_KEY;
const secretKey = process.env.KEYWARD_SECRET_KEY;

const body = { timestamp: Date.now(), note: "Zoë / 1.50" };
// The message is the body without `signature`, exactly as JSON.stringify writes it.
body.signature = crypto.createHmac("sha512", secretKey).update(JSON.stringify(body)).digest("hex");

const response = await fetch(`${url}/api/v1/PartnerP2P/WhoAmI`, {
  method: "POST",
  headers: { "Content-Type": "application/json", Authorization: `Bearer ${publicKey}` },
  body: JSON.stringify(body),
});
console.log(response.status, await response.text());
if (!response.ok) process.exit(1);
