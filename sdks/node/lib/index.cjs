"use strict";
// keyward-partner: the partner's client and the exchange's verifier for a keyward service.
// No runtime dependency: node:crypto and the global fetch (Node >= 18). The ESM entry point
// (index.mjs) re-exports this module, so both module forms share one implementation.

const crypto = require("node:crypto");

const PATHS = {
  onboard: "/api/v1/no-auth/PartnerP2P/OnboardPartner",
  regenerate: "/api/v1/no-auth/PartnerP2P/GenKeysForPartner",
  redeem: "/api/v1/no-auth/PartnerP2P/RedeemKeyLink",
  whoAmI: "/api/v1/PartnerP2P/WhoAmI",
  retireOldKeys: "/api/v1/PartnerP2P/RetireOldKeys",
  setAllowedIps: "/api/v1/PartnerP2P/SetAllowedIps",
  createKey: "/api/v1/PartnerP2P/CreateKey",
  listKeys: "/api/v1/PartnerP2P/ListKeys",
  revokeKey: "/api/v1/PartnerP2P/RevokeKey",
  time: "/api/v1/time",
  verify: "/internal/v1/verify",
};

/** 429 and 503 are retried this many times at most, waiting what Retry-After says (capped). */
const MAX_RETRIES = 3;
const MAX_RETRY_WAIT_MS = 10_000;

// ---------------------------------------------------------------------------------------------
// Signing (SPEC §2)

function withoutSignature(body) {
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw new TypeError("a keyward request body is a plain JSON object");
  }
  const { signature: _ignored, ...rest } = body;
  return rest;
}

/** The as-sent message: JSON.stringify of the body without its top-level `signature`. */
function message(body) {
  return JSON.stringify(withoutSignature(body));
}

/** The RFC 8785 (JCS) message: the same, with members sorted by UTF-16 code units. */
function messageCanonical(body) {
  return canonical(withoutSignature(body));
}

function canonical(value) {
  if (value !== null && typeof value === "object" && typeof value.toJSON === "function") {
    value = value.toJSON();
  }
  if (Array.isArray(value)) {
    return `[${value.map((item) => (item === undefined ? "null" : canonical(item))).join(",")}]`;
  }
  if (value !== null && typeof value === "object") {
    const members = Object.keys(value)
      .filter((name) => value[name] !== undefined && typeof value[name] !== "function")
      .sort() // the default order compares UTF-16 code units, as RFC 8785 asks
      .map((name) => `${JSON.stringify(name)}:${canonical(value[name])}`);
    return `{${members.join(",")}}`;
  }
  return JSON.stringify(value);
}

function hmac(text, secretKey) {
  return crypto.createHmac("sha512", secretKey).update(text, "utf8").digest("hex");
}

/** Lower-case hex HMAC-SHA512 of the body without `signature`, as JSON.stringify writes it. */
function sign(body, secretKey) {
  return hmac(message(body), secretKey);
}

/** The same over the RFC 8785 form (the server accepts either). */
function signCanonical(body, secretKey) {
  return hmac(messageCanonical(body), secretKey);
}

// ---------------------------------------------------------------------------------------------
// Key formats (SPEC §1): a prefix, 30 random base62 characters and a CRC-32 checksum.

const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

function crc32(text) {
  let crc = 0xffffffff;
  for (const byte of Buffer.from(text, "ascii")) crc = CRC_TABLE[(crc ^ byte) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

function base62(n, width) {
  let out = "";
  while (n > 0) {
    out = BASE62[n % 62] + out;
    n = Math.floor(n / 62);
  }
  return out.padStart(width, "0");
}

/** Whether `key` is a well-formed key of the given prefix (pk_partner_, sk_partner_, …). */
function isWellFormedKey(key, prefix) {
  if (typeof key !== "string" || !key.startsWith(prefix) || key.length !== prefix.length + 36) {
    return false;
  }
  const body = key.slice(prefix.length, prefix.length + 30);
  if (![...key.slice(prefix.length)].every((c) => BASE62.includes(c))) return false;
  return key.slice(prefix.length + 30) === base62(crc32(prefix + body), 6);
}

/**
 * Whether `key` has the shape of a key moved in from an exchange's previous system (SPEC §10.2):
 * `pk_partner_` or `sk_partner_` and 8 to 128 letters and digits, no checksum.
 */
function isLegacyKey(key, prefix) {
  return typeof key === "string" && (prefix === "pk_partner_" || prefix === "sk_partner_")
    && key.startsWith(prefix) && /^[A-Za-z0-9]{8,128}$/.test(key.slice(prefix.length));
}

// ---------------------------------------------------------------------------------------------
// Errors and HTTP

/** An error answer of keyward (SPEC §4): status, code, message and data, as the server said. */
class KeywardError extends Error {
  constructor(status, code, message, data = null, errors = undefined) {
    super(message);
    this.name = "KeywardError";
    this.status = status;
    this.code = code;
    this.data = data;
    if (errors !== undefined) this.errors = errors;
  }
}

function trimBase(url) {
  return String(url).replace(/\/+$/, "");
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function retryDelayMs(response, attempt) {
  const header = Number(response.headers.get("retry-after"));
  const wanted = Number.isFinite(header) && header > 0 ? header * 1000 : 250 * 2 ** attempt;
  return Math.min(wanted, MAX_RETRY_WAIT_MS);
}

/** Sends one request, retrying 429 and 503 (bounded); returns the answer's status and JSON. */
async function send(url, init) {
  for (let attempt = 0; ; attempt++) {
    const response = await fetch(url, init);
    if ((response.status === 429 || response.status === 503) && attempt < MAX_RETRIES) {
      await sleep(retryDelayMs(response, attempt));
      continue;
    }
    const text = await response.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = null;
    }
    return { status: response.status, headers: response.headers, json, text };
  }
}

function failure(answer) {
  const envelope = answer.json ?? {};
  const code = typeof envelope.code === "string" ? envelope.code : "unexpected_answer";
  const text = typeof envelope.message === "string" ? envelope.message : `HTTP ${answer.status}`;
  return new KeywardError(answer.status, code, text, envelope.data ?? null, envelope.errors);
}

async function postJson(url, body, headers = {}) {
  return send(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

function envelopeData(answer) {
  if (answer.status >= 200 && answer.status < 300) return answer.json?.data ?? null;
  throw failure(answer);
}

// ---------------------------------------------------------------------------------------------
// The partner's client

/** Throws unless the pair is of SPEC §1's format, both halves of the same mode. */
function checkKeys(publicKey, secretKey) {
  // A live pair, or a test pair (SPEC §8.3): both halves of the same mode.
  const live = isWellFormedKey(publicKey, "pk_partner_");
  if (!live && !isWellFormedKey(publicKey, "pk_test_partner_")) {
    throw new TypeError("publicKey is not a well-formed public key (pk_partner_… or pk_test_partner_…): check for a typo or a truncated key");
  }
  if (!isWellFormedKey(secretKey, live ? "sk_partner_" : "sk_test_partner_")) {
    throw new TypeError(
      `secretKey is not a well-formed secret key (${live ? "sk_partner_" : "sk_test_partner_"}…) of the public key's mode: check for a typo, a truncated key, or a live and a test key mixed`,
    );
  }
}

class PartnerClient {
  /**
   * @param {object} options baseUrl, publicKey, secretKey; timestamp (add a `timestamp` to
   *   each body, default true); clockSync (on `stale_request`, correct the clock by the
   *   server's and try once more, default true); now (milliseconds since the epoch, for tests);
   *   legacyKeys (accept a live pair moved in from the exchange's previous system, SPEC §10.2,
   *   which has no checksum to catch a typo here: default false).
   */
  constructor({ baseUrl, publicKey, secretKey, timestamp = true, clockSync = true, now = Date.now, legacyKeys = false }) {
    if (!(legacyKeys && isLegacyKey(publicKey, "pk_partner_") && isLegacyKey(secretKey, "sk_partner_"))) {
      checkKeys(publicKey, secretKey);
    }
    this.baseUrl = trimBase(baseUrl);
    this.publicKey = publicKey;
    Object.defineProperty(this, "secretKey", { value: secretKey, enumerable: false });
    this.timestamp = timestamp;
    this.clockSync = clockSync;
    this.now = now;
    /** Milliseconds to add to the local clock (learned from the server). */
    this.clockOffsetMs = 0;
  }

  /** Signs `body` and sends it to `path`; returns the answer's JSON (keyward's envelope, or
   * the payment API's answer through the gateway). Errors throw a KeywardError. */
  async request(path, body = {}) {
    const answer = await this.#signedRequest(path, body);
    if (answer.status >= 200 && answer.status < 300) return answer.json;
    throw failure(answer);
  }

  async #signedRequest(path, body) {
    let corrected = false;
    for (;;) {
      const payload = withoutSignature(body);
      if (this.timestamp && payload.timestamp === undefined) {
        payload.timestamp = Math.round(this.now() + this.clockOffsetMs);
      }
      payload.signature = sign(payload, this.secretKey);
      const answer = await postJson(`${this.baseUrl}${path}`, payload, {
        Authorization: `Bearer ${this.publicKey}`,
      });
      const stale = answer.status === 401 && answer.json?.code === "stale_request";
      if (stale && this.clockSync && this.timestamp && !corrected && body.timestamp === undefined) {
        const serverTime = answer.json?.data?.server_time_ms;
        if (typeof serverTime === "number") {
          this.clockOffsetMs = serverTime - this.now();
          corrected = true;
          continue;
        }
      }
      return answer;
    }
  }

  async #data(path, body) {
    return envelopeData(await this.#signedRequest(path, body));
  }

  /** WhoAmI: `{partner_id, partner_code, key_created_at, key_expires_at, allowed_ips, key_id,
   * kind, name, scopes, mode}`. */
  whoAmI() {
    return this.#data(PATHS.whoAmI, {});
  }

  /** Asks for new keys: a one-time link is emailed. `overlapSeconds` (0–604800) keeps the
   * current pair working that long after the link is used. Returns the server's message. */
  async regenerate({ email, partnerCode, overlapSeconds } = {}) {
    const body = { email, partner_code: partnerCode };
    if (overlapSeconds !== undefined) body.overlap_seconds = overlapSeconds;
    const answer = await this.#signedRequest(PATHS.regenerate, body);
    envelopeData(answer);
    return answer.json?.message;
  }

  /** Ends the retiring pair's overlap now (signed with the current pair): `{revoked}`. */
  retireOldKeys() {
    return this.#data(PATHS.retireOldKeys, {});
  }

  /** Sets the partner's IP allow-list; `confirmLockOut` to allow a list without this address. */
  setAllowedIps(list, { confirmLockOut = false } = {}) {
    const body = { allowed_ips: list };
    if (confirmLockOut) body.confirm_lock_out = true;
    return this.#data(PATHS.setAllowedIps, body);
  }

  /**
   * Asks for a restricted or test pair (SPEC §8.1), signed with the primary pair: a one-time
   * link to it is emailed to the registered address (redeem it with `PartnerClient.redeem`).
   * `scopes` among the exchange's; `mode` "live" (default) or "test"; `expiresInDays` 1–366.
   * Returns the server's message.
   */
  async createKey({ name, scopes = [], mode, expiresInDays } = {}) {
    const body = { name, scopes };
    if (mode !== undefined) body.mode = mode;
    if (expiresInDays !== undefined) body.expires_in_days = expiresInDays;
    const answer = await this.#signedRequest(PATHS.createKey, body);
    envelopeData(answer);
    return answer.json?.message;
  }

  /** Every pair that works: `[{key_id, kind, name, hint, scopes, mode, created_at,
   * expires_at, last_used_at, state}]` (never a secret, never a whole public key). */
  async listKeys() {
    return (await this.#data(PATHS.listKeys, {})).keys;
  }

  /** Revokes one restricted pair by its `key_id`, on every node when it returns: `{revoked}`. */
  revokeKey(keyId) {
    return this.#data(PATHS.revokeKey, { key_id: keyId });
  }

  /** The server's clock: `{server_time_ms, server_time}`. */
  async time() {
    return PartnerClient.time(this.baseUrl);
  }

  static async time(baseUrl) {
    return envelopeData(await send(`${trimBase(baseUrl)}${PATHS.time}`, { method: "GET" }));
  }

  /** Onboards a partner: a one-time link to its keys is emailed to `email`. */
  static async onboard(baseUrl, { partnerCode, email }) {
    const answer = await postJson(`${trimBase(baseUrl)}${PATHS.onboard}`, { partner_code: partnerCode, email });
    envelopeData(answer);
    return answer.json?.message;
  }

  /** Redeems a one-time link (the link, or its token): the keys, shown once. */
  static async redeem(baseUrl, linkOrToken, partnerCode) {
    const token = String(linkOrToken).split("/").filter(Boolean).pop();
    const data = envelopeData(
      await postJson(`${trimBase(baseUrl)}${PATHS.redeem}`, { token, partner_code: partnerCode }),
    );
    return {
      partnerId: data.partner_id,
      partnerCode: data.partner_code,
      publicKey: data.public_key,
      secretKey: data.secret_key,
    };
  }

  /** Lost keys: the same answer whether or not the pair matches a partner (no enumeration). */
  static async lostKeys(baseUrl, { email, partnerCode }) {
    const answer = await postJson(`${trimBase(baseUrl)}${PATHS.regenerate}`, { email, partner_code: partnerCode });
    envelopeData(answer);
    return answer.json?.message;
  }
}

// ---------------------------------------------------------------------------------------------
// For the exchange's own services: the verify API (SPEC §7.1)

class Verifier {
  /** @param {object} options url: keyward's internal listener; token: a kw_service_… token. */
  constructor({ url, token }) {
    if (!isWellFormedKey(token, "kw_service_")) {
      throw new TypeError("token is not a keyward service token (kw_service_…): create one with `keyward service-token create NAME`");
    }
    this.url = trimBase(url);
    Object.defineProperty(this, "token", { value: token, enumerable: false });
  }

  /**
   * Verifies one partner request as it arrived. Answers `{valid: true, partner_id, …}` or
   * `{valid: false, error: {status, code, message, data}}` (relay it unchanged). A refused
   * service token or an unreachable keyward throws a KeywardError: that is not the partner's
   * doing.
   */
  async verify({ authorization, body, clientIp, singleUse = false, requiredScopes } = {}) {
    const request = {
      authorization: authorization ?? null,
      body: Buffer.isBuffer(body) ? body.toString("utf8") : body,
      client_ip: clientIp ?? null,
      single_use: singleUse,
    };
    if (requiredScopes !== undefined) request.required_scopes = requiredScopes;
    const answer = await postJson(`${this.url}${PATHS.verify}`, request, {
      Authorization: `Bearer ${this.token}`,
    });
    return envelopeData(answer);
  }
}

function readRawBody(req) {
  if (typeof req.rawBody === "string") return Promise.resolve(req.rawBody);
  if (Buffer.isBuffer(req.rawBody)) return Promise.resolve(req.rawBody.toString("utf8"));
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on("data", (chunk) => chunks.push(chunk));
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

function writeJson(res, status, payload) {
  const text = JSON.stringify(payload);
  res.statusCode = status;
  res.setHeader("Content-Type", "application/json");
  res.setHeader("Content-Length", Buffer.byteLength(text));
  res.end(text);
}

/**
 * A middleware with Express's signature `(req, res, next)`, also usable around a plain
 * node:http handler. It reads the raw body (mount it before any body parser; the raw text is
 * left in `req.rawBody`), asks keyward, and either relays an invalid answer's status and
 * envelope unchanged or sets `req.keyward = {partnerId, partnerCode, keyId, keyCreatedAt,
 * keyExpiresAt, mode, scopes}` and calls `next()`.
 *
 * options: singleUse (default: every method but GET, HEAD and OPTIONS), clientIp(req)
 * (default: the socket's address; behind a proxy, give the address it vouches for),
 * requiredScopes.
 */
function verifyMiddleware(verifier, options = {}) {
  const clientIp = options.clientIp ?? ((req) => req.socket?.remoteAddress ?? null);
  return async (req, res, next) => {
    try {
      const body = await readRawBody(req);
      req.rawBody = body;
      const singleUse =
        typeof options.singleUse === "function"
          ? options.singleUse(req)
          : options.singleUse ?? !["GET", "HEAD", "OPTIONS"].includes(req.method);
      const result = await verifier.verify({
        authorization: req.headers.authorization,
        body,
        clientIp: clientIp(req),
        singleUse,
        requiredScopes: options.requiredScopes,
      });
      if (!result.valid) {
        const { status, ...error } = result.error;
        return writeJson(res, status, { success: false, ...error });
      }
      req.keyward = {
        partnerId: result.partner_id,
        partnerCode: result.partner_code,
        keyId: result.key_id,
        keyCreatedAt: result.key_created_at,
        keyExpiresAt: result.key_expires_at ?? null,
        mode: result.mode,
        scopes: result.scopes,
      };
      return next();
    } catch (error) {
      // keyward refused our token or cannot be reached: the partner can do nothing about it.
      console.error(`keyward verify: ${error.message}`);
      return writeJson(res, 503, {
        success: false,
        message: "The service is temporarily unavailable. Try again shortly.",
        data: null,
        code: "unavailable",
      });
    }
  };
}

module.exports = {
  sign,
  signCanonical,
  message,
  messageCanonical,
  isWellFormedKey,
  KeywardError,
  PartnerClient,
  Verifier,
  verifyMiddleware,
  PATHS,
};
