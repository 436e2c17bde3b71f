// The nginx + njs peer of keyward's gateway, for bench/compare.py (target `njs_gateway`): a
// script in nginx that checks a request's HMAC-SHA512 signature as SPEC §2's "as sent" form
// says (the whole secret key as the key, JSON.stringify of the body without `signature`), then
// proxies it. The secret comes from an nginx `map` of the Authorization header that
// compare.py writes for the run's sampled partners. It checks less than keyward does (no
// canonical form, no duplicate members, no expiry, allow-list or freshness) and is as fast a
// script as njs 0.7 allows: njs's `crypto` module has no SHA-512, WebCrypto does.

function hex(buffer) {
  return Buffer.from(buffer).toString('hex');
}

function refuse(r, status, code) {
  r.headersOut['Content-Type'] = 'application/json';
  r.return(status, '{"success":false,"code":"' + code + '"}');
}

async function check(r) {
  var secret = r.variables.partner_secret;
  if (!secret) {
    refuse(r, 401, 'unknown_key');
    return;
  }
  var body;
  try {
    body = JSON.parse(r.requestText);
  } catch (e) {
    refuse(r, 400, 'invalid_json');
    return;
  }
  var signature = body.signature;
  delete body.signature;
  var key = await crypto.subtle.importKey('raw', secret, { name: 'HMAC', hash: 'SHA-512' }, false, ['sign']);
  var mac = await crypto.subtle.sign('HMAC', key, JSON.stringify(body));
  if (typeof signature !== 'string' || signature.toLowerCase() !== hex(mac)) {
    refuse(r, 401, 'invalid_signature');
    return;
  }
  r.internalRedirect('@upstream');
}

export default { check };
