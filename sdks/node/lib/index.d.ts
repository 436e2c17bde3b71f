// Types of keyward-partner (both module forms).
import type { IncomingMessage, ServerResponse } from "node:http";

/** A JSON object body of a signed request. */
export type Body = { [member: string]: unknown };

/** Lower-case hex HMAC-SHA512 of `body` without `signature`, as JSON.stringify writes it. */
export declare function sign(body: Body, secretKey: string): string;
/** The same over the RFC 8785 (JCS) form of the body. */
export declare function signCanonical(body: Body, secretKey: string): string;
/** The as-sent message the server computes (SPEC §2). */
export declare function message(body: Body): string;
/** The RFC 8785 message the server computes. */
export declare function messageCanonical(body: Body): string;
/** Whether `key` is well-formed for `prefix` (pk_partner_, sk_partner_, pk_test_partner_, sk_test_partner_, kw_service_): prefix, 30 base62 characters, CRC-32 checksum. */
export declare function isWellFormedKey(key: string, prefix: string): boolean;

/** An error answer of keyward (SPEC §4). */
export declare class KeywardError extends Error {
  readonly status: number;
  readonly code: string;
  readonly data: unknown;
  readonly errors?: { field: string; problem: string }[];
  constructor(status: number, code: string, message: string, data?: unknown, errors?: { field: string; problem: string }[]);
}

export interface PartnerClientOptions {
  baseUrl: string;
  publicKey: string;
  secretKey: string;
  /** Add a `timestamp` (ms since the epoch) to each body. Default true. */
  timestamp?: boolean;
  /** On `stale_request`, correct the clock by the server's and try once more. Default true. */
  clockSync?: boolean;
  /** The local clock, in ms since the epoch (tests). Default Date.now. */
  now?: () => number;
  /**
   * Accept a live pair moved in from the exchange's previous system (SPEC §10.2):
   * `pk_partner_`/`sk_partner_` + 8–128 letters and digits, with no checksum to catch a typo
   * here. Default false: keys keyward issued are checked against SPEC §1.
   */
  legacyKeys?: boolean;
}

export interface WhoAmI {
  partner_id: string;
  partner_code: string;
  key_created_at: string;
  key_expires_at: string | null;
  allowed_ips: string[];
  key_id: string;
  kind: "primary" | "restricted";
  /** The restricted pair's name; null for the primary pair. */
  name: string | null;
  /** The scopes this pair holds (every scope of the exchange for the primary pair). */
  scopes: string[];
  mode: KeyMode;
  /** "retiring": the old pair of a regeneration with an overlap; it stops at key_expires_at. */
  state: "current" | "retiring";
  /** A key moved in from the exchange's previous system (SPEC §10.2): works until regenerated. */
  legacy?: boolean;
}

/** "live" keys reach the payment API; "test" keys (pk_test_partner_…) only its sandbox. */
export type KeyMode = "live" | "test";

/** One pair as ListKeys describes it (SPEC §8.1): never a secret, never a whole public key. */
export interface KeyInfo {
  key_id: string;
  kind: "primary" | "restricted";
  name: string | null;
  /** The public key's start, to tell pairs apart. */
  hint: string;
  scopes: string[];
  mode: KeyMode;
  created_at: string;
  expires_at: string | null;
  last_used_at: string | null;
  state: "current" | "retiring";
  /** A key moved in from the exchange's previous system (SPEC §10.2): works until regenerated. */
  legacy?: boolean;
}

export interface CreateKeyOptions {
  /** What the key is for (1–64 printable characters). */
  name: string;
  /** Scopes among the exchange's (KEYWARD_SCOPES); [] when it has none. */
  scopes?: string[];
  mode?: KeyMode;
  /** The pair stops working this many days after it is made (1–366). */
  expiresInDays?: number;
}

export interface Credentials {
  partnerId: string;
  partnerCode: string;
  publicKey: string;
  secretKey: string;
}

export interface ServerTime {
  server_time_ms: number;
  server_time: string;
}

export declare class PartnerClient {
  constructor(options: PartnerClientOptions);
  readonly baseUrl: string;
  readonly publicKey: string;
  clockOffsetMs: number;
  /** Signs `body` and POSTs it to `path`; resolves to the answer's JSON. */
  request(path: string, body?: Body): Promise<any>;
  whoAmI(): Promise<WhoAmI>;
  regenerate(options: { email: string; partnerCode: string; overlapSeconds?: number }): Promise<string>;
  retireOldKeys(): Promise<{ revoked: number }>;
  setAllowedIps(list: string[], options?: { confirmLockOut?: boolean }): Promise<{ allowed_ips: string[] }>;
  /** Emails a one-time link to a new restricted or test pair; resolves to the server's message. */
  createKey(options: CreateKeyOptions): Promise<string>;
  listKeys(): Promise<KeyInfo[]>;
  revokeKey(keyId: string): Promise<{ revoked: number }>;
  time(): Promise<ServerTime>;
  static time(baseUrl: string): Promise<ServerTime>;
  static onboard(baseUrl: string, options: { partnerCode: string; email: string }): Promise<string>;
  static redeem(baseUrl: string, linkOrToken: string, partnerCode: string): Promise<Credentials>;
  static lostKeys(baseUrl: string, options: { email: string; partnerCode: string }): Promise<string>;
}

export interface RelayedError {
  status: number;
  code: string;
  message: string;
  data: unknown;
  errors?: { field: string; problem: string }[];
}

export type Verification =
  | {
      valid: true;
      partner_id: string;
      partner_code: string;
      key_id: string;
      key_created_at: string;
      key_expires_at: string | null;
      [more: string]: unknown;
    }
  | { valid: false; error: RelayedError };

export interface VerifyInput {
  authorization?: string | null;
  body: string | Buffer;
  clientIp?: string | null;
  singleUse?: boolean;
  requiredScopes?: string[];
}

export declare class Verifier {
  constructor(options: { url: string; token: string });
  readonly url: string;
  verify(input: VerifyInput): Promise<Verification>;
}

export interface KeywardPartner {
  partnerId: string;
  partnerCode: string;
  keyId: string;
  keyCreatedAt: string;
  keyExpiresAt: string | null;
  mode?: string;
  scopes?: string[];
}

export interface VerifyMiddlewareOptions {
  singleUse?: boolean | ((req: IncomingMessage) => boolean);
  clientIp?: (req: IncomingMessage) => string | null | undefined;
  requiredScopes?: string[];
}

export type VerifiedRequest = IncomingMessage & { keyward?: KeywardPartner; rawBody?: string };

declare module "node:http" {
  interface IncomingMessage {
    /** Set by verifyMiddleware on a request keyward found valid. */
    keyward?: KeywardPartner;
    /** The body as it arrived, read by verifyMiddleware. */
    rawBody?: string;
  }
}

export declare function verifyMiddleware(
  verifier: Verifier,
  options?: VerifyMiddlewareOptions,
): (req: VerifiedRequest, res: ServerResponse, next: (error?: unknown) => void) => Promise<void>;

export declare const PATHS: {
  readonly onboard: string;
  readonly regenerate: string;
  readonly redeem: string;
  readonly whoAmI: string;
  readonly retireOldKeys: string;
  readonly setAllowedIps: string;
  readonly createKey: string;
  readonly listKeys: string;
  readonly revokeKey: string;
  readonly time: string;
  readonly verify: string;
};
