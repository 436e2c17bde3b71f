// A payout API that authenticates partners through keyward's verify API with the
// keyward-partner package (`npm install ./sdks/node`), on plain node:http.
import http from "node:http";
import { Verifier, verifyMiddleware } from "keyward-partner";

const verifier = new Verifier({
  url: process.env.KEYWARD_INTERNAL_URL ?? "http://127.0.0.1:8081",
  token: process.env.KEYWARD_SERVICE_TOKEN, // `keyward service-token create payouts`; checked here
});
const guard = verifyMiddleware(verifier); // POSTs are single-use: a payout is never paid twice

const server = http.createServer((req, res) =>
  guard(req, res, () => {
    const payout = JSON.parse(req.rawBody); // exactly what the partner signed
    res.setHeader("Content-Type", "application/json");
    res.end(JSON.stringify({
      success: true,
      message: "payout accepted",
      data: { partner_id: req.keyward.partnerId, amount: payout.amount ?? null },
    }));
  }),
);
server.listen(Number(process.env.PORT ?? 9003), "127.0.0.1", () => {
  console.log(`payout API listening on http://127.0.0.1:${server.address().port}`);
});
