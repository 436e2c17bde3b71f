// A payout API that authenticates partners itself, through keyward's verify API (Node.js,
// no dependencies). Invalid requests get exactly the status and envelope keyward says.
import http from "node:http";

const keyward = process.env.KEYWARD_INTERNAL_URL ?? "http://127.0.0.1:8081";
const token = process.env.KEYWARD_SERVICE_TOKEN ?? ""; // `keyward service-token create payouts`
if (!token.startsWith("kw_service_")) {
  console.error(
    "KEYWARD_SERVICE_TOKEN must hold this service's token (kw_service_…): " +
      "create one with `keyward service-token create payouts`",
  );
  process.exit(1);
}

async function verify(authorization, body, clientIp, singleUse) {
  const response = await fetch(`${keyward}/internal/v1/verify`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
    body: JSON.stringify({ authorization, body, client_ip: clientIp, single_use: singleUse }),
  });
  if (response.status === 401) {
    // Not the partner's fault: our own token is refused. Say so where operators look.
    throw new Error("configuration error: the verify API answered 401: our service token is refused (check KEYWARD_SERVICE_TOKEN)");
  }
  if (!response.ok) throw new Error(`the verify API answered ${response.status}`);
  return (await response.json()).data;
}

const server = http.createServer(async (request, response) => {
  const chunks = [];
  for await (const chunk of request) chunks.push(chunk);
  const body = Buffer.concat(chunks).toString("utf8");
  const answer = (status, payload) => {
    response.writeHead(status, { "Content-Type": "application/json" });
    response.end(JSON.stringify(payload));
  };
  let result;
  try {
    // A payout must not be paid twice: single_use.
    result = await verify(request.headers.authorization, body, request.socket.remoteAddress, true);
  } catch (error) {
    console.error(error.message);
    return answer(503, { success: false, message: "Try again shortly.", data: null, code: "unavailable" });
  }
  if (!result.valid) {
    const { status, ...error } = result.error;
    return answer(status, { success: false, ...error });
  }
  answer(200, { success: true, message: "payout accepted", data: { partner_id: result.partner_id } });
});

server.listen(Number(process.env.PORT ?? 9002), "127.0.0.1", () => {
  console.log(`payout API listening on http://127.0.0.1:${server.address().port}`);
});
