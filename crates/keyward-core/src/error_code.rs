//! Every error code of SPEC §4, its HTTP status, and what we tell the caller to do.
//! One table, used by the server to answer and by the SDK and CLI to explain.

use serde::{Deserialize, Serialize};

macro_rules! error_codes {
    ($($variant:ident => $code:literal, $status:literal, $message:literal;)*) => {
        /// The spec's error codes (SPEC §4).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(rename_all = "snake_case")]
        pub enum ErrorCode {
            $($variant,)*
        }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code as it appears on the wire.
            pub const fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code,)* }
            }

            /// The HTTP status that carries this code.
            pub const fn status(self) -> u16 {
                match self { $(ErrorCode::$variant => $status,)* }
            }

            /// What went wrong and what to do about it, for people.
            pub const fn message(self) -> &'static str {
                match self { $(ErrorCode::$variant => $message,)* }
            }

            pub fn from_code(code: &str) -> Option<Self> {
                match code { $($code => Some(ErrorCode::$variant),)* _ => None }
            }
        }
    };
}

error_codes! {
    InvalidJson => "invalid_json", 400,
        "The body is not valid JSON. Send one UTF-8 JSON object.";
    NotAnObject => "not_an_object", 400,
        "The body must be a JSON object ({...}), not an array, string, number or null.";
    DuplicateMember => "duplicate_member", 400,
        "A member name appears twice in the same JSON object. Send each member once.";
    MissingFields => "missing_fields", 400,
        "Required fields are missing; see `errors` for each one.";
    InvalidField => "invalid_field", 400,
        "Some fields have invalid values; see `errors` for each one.";
    MissingAuthorization => "missing_authorization", 401,
        "Send your public key as `Authorization: Bearer pk_partner_...`.";
    MalformedAuthorization => "malformed_authorization", 401,
        "The Authorization header must be `Bearer ` followed by a well-formed public key (pk_partner_...). Check for a typo or a truncated key.";
    UnknownKey => "unknown_key", 401,
        "This public key is not known. Check that you copied the whole key, or regenerate your keys.";
    RevokedKey => "revoked_key", 401,
        "This public key was revoked when your keys were regenerated. Use your current key pair.";
    ExpiredKey => "expired_key", 401,
        "This key pair has expired: its overlap after a regeneration ended, it reached the exchange's maximum age or idle time, or its own expiry passed. Use your current key pair, or make a new one.";
    InvalidSignature => "invalid_signature", 401,
        "The signature does not match the body. Sign the body without its `signature` member, exactly as sent (JSON.stringify) or in RFC 8785 form, with HMAC-SHA512 keyed by your secret key, and send lower-case hex. `data.message_sha256` holds the SHA-256 of both messages the server signed: hash your own string-to-sign and compare.";
    StaleRequest => "stale_request", 401,
        "The request's `timestamp` is too far from the server's time. Send the current time in milliseconds since the Unix epoch and check your clock: `data` holds the server's time and how far your timestamp is from it (GET /api/v1/time tells it too).";
    InvalidServiceToken => "invalid_service_token", 401,
        "Send a service token of this keyward as `Authorization: Bearer kw_service_...` (see `keyward service-token create`). It is missing, unknown or revoked.";
    PartnerSuspended => "partner_suspended", 403,
        "This partner is suspended. Contact the exchange's operators.";
    IpNotAllowed => "ip_not_allowed", 403,
        "Requests from this IP address are not allowed for this partner. Ask the operators to add it to your allow-list.";
    PartnerMismatch => "partner_mismatch", 403,
        "`partner_code` is not the partner this key belongs to.";
    EmailMismatch => "email_mismatch", 403,
        "`email` is not this partner's registered address.";
    KeyRetiring => "key_retiring", 403,
        "This key pair is retiring: it keeps working for requests until it expires, but only your current key pair manages your account (regeneration, RetireOldKeys, SetAllowedIps). Sign this request with the current pair.";
    InsufficientScope => "insufficient_scope", 403,
        "This key may not do this: it lacks a scope the route needs (`data` says which), or it is a restricted key and only your primary key pair manages your keys and account. Use a key that holds the scope, or your primary pair.";
    TestKeyNotAccepted => "test_key_not_accepted", 403,
        "This is a test key (pk_test_partner_...) and this exchange has no sandbox here: test keys are never sent to the live service. Use a live key, or the sandbox the exchange documents.";
    NotFound => "not_found", 404,
        "There is no such route. See /openapi.json for the routes.";
    LinkUnknown => "link_unknown", 404,
        "This link is not known. Check that you copied the whole link from the email.";
    MethodNotAllowed => "method_not_allowed", 405,
        "This route does not accept this method.";
    PartnerExists => "partner_exists", 409,
        "A partner with this code already exists. If it is yours and you lost your keys, request a regeneration link.";
    ReplayedRequest => "replayed_request", 409,
        "This signed request was already used and may be used only once. To make a new request, change the body (a new `timestamp` or `nonce`) and sign it again.";
    KeyLimitReached => "key_limit_reached", 409,
        "This partner already holds 10 key pairs (the primary and 9 restricted ones). Revoke one you no longer use (RevokeKey), then try again.";
    PartnerCodeMismatch => "partner_code_mismatch", 422,
        "The partner code does not match this link. Type the partner code the link was sent for.";
    WouldLockOut => "would_lock_out", 422,
        "The new allow-list does not include the address this request comes from, so it would lock you out. Add that address, or send `\"confirm_lock_out\": true` if you mean it.";
    LinkUsed => "link_used", 410,
        "This link was already used. Each link works once; request a new one if you need new keys.";
    LinkExpired => "link_expired", 410,
        "This link has expired or was replaced by a newer one. Use the newest email, or request a new link.";
    BodyTooLarge => "body_too_large", 413,
        "The body is larger than 64 KiB.";
    UnsupportedMediaType => "unsupported_media_type", 415,
        "Send the body as JSON with `Content-Type: application/json`.";
    RateLimited => "rate_limited", 429,
        "Too many requests. Wait for the number of seconds in the Retry-After header, then try again.";
    InternalError => "internal_error", 500,
        "Something went wrong on our side. Try again; if it persists, contact the operators with the request id.";
    UpstreamUnavailable => "upstream_unavailable", 502,
        "The service behind keyward could not be reached. Try again shortly; if it persists, contact the operators with the request id.";
    Unavailable => "unavailable", 503,
        "The service is temporarily unavailable. Try again shortly.";
    UpstreamTimeout => "upstream_timeout", 504,
        "The service behind keyward did not answer in time. Whether it acted on the request is unknown: check before repeating it.";
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_their_wire_names() {
        for &code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_code(code.as_str()), Some(code));
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }
}
