//! The OpenAPI schemas of request bodies and of the answers' envelopes. The data inside the
//! envelopes (credentials, WhoAmI, field problems, error codes) are core's wire types, which
//! derive their own schemas: nothing here mirrors them by hand.

use keyward_core::wire::{
    AllowedIpsData, Credentials, FieldProblem, KeyList, RetiredKeys, RevokedKeys, ServerTime,
    VerifiedPartner, VerifyRejection, WhoAmI,
};
use keyward_core::ErrorCode;
use serde::Serialize;
use utoipa::{IntoResponses, ToSchema};

// ---- request bodies ----

/// `OnboardPartner`.
#[derive(ToSchema, Serialize)]
pub struct OnboardRequest {
    /// 1–64 of `A-Za-z0-9._-`; unique case-insensitively.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$", example = "ACME")]
    pub partner_code: String,
    #[schema(format = "email", example = "ops@acme.example")]
    pub email: String,
}

/// `GenKeysForPartner`. With `Authorization`, `signature` is required; without it (lost keys)
/// the answer is the same whether or not the pair matches a partner.
#[derive(ToSchema, Serialize)]
pub struct RegenerateRequest {
    #[schema(example = "ops@acme.example")]
    pub email: String,
    #[schema(example = "ACME")]
    pub partner_code: String,
    /// Lower-case hex HMAC-SHA512 of the body without `signature`.
    #[schema(pattern = "^[0-9a-fA-F]{128}$")]
    pub signature: Option<String>,
    /// Optional: milliseconds since the Unix epoch; refused when more than 300 s off.
    pub timestamp: Option<i64>,
    /// Signed form only: once the link is used, the old pair keeps working this many seconds
    /// (0 to 604800; default 0, revoked at once).
    #[schema(minimum = 0, maximum = 604800)]
    pub overlap_seconds: Option<i64>,
}

/// A signed body: `signature` and any other members (all covered by the signature).
#[derive(ToSchema, Serialize)]
pub struct SignedRequest {
    #[schema(pattern = "^[0-9a-fA-F]{128}$")]
    pub signature: String,
    pub timestamp: Option<i64>,
}

/// `SetAllowedIps`.
#[derive(ToSchema, Serialize)]
pub struct SetAllowedIpsRequest {
    /// At most 20 IPv4/IPv6 addresses or CIDR blocks; `[]` allows any address.
    #[schema(example = json!(["203.0.113.7", "198.51.100.0/24", "2001:db8::/48"]), max_items = 20)]
    pub allowed_ips: Vec<String>,
    /// Apply the list even though it does not include this request's own address.
    pub confirm_lock_out: Option<bool>,
    #[schema(pattern = "^[0-9a-fA-F]{128}$")]
    pub signature: String,
    pub timestamp: Option<i64>,
}

/// `CreateKey` (SPEC §8.1).
#[derive(ToSchema, Serialize)]
pub struct CreateKeyRequest {
    /// 1–64 printable characters.
    #[schema(example = "reporting job", min_length = 1, max_length = 64)]
    pub name: String,
    /// Scopes of the exchange (`KEYWARD_SCOPES`); leave out when the exchange has none.
    #[schema(example = json!(["reports:read"]))]
    pub scopes: Option<Vec<String>>,
    /// `live` (default) or `test`.
    #[schema(example = "live", pattern = "^(live|test)$")]
    pub mode: Option<String>,
    #[schema(minimum = 1, maximum = 366)]
    pub expires_in_days: Option<i64>,
    #[schema(pattern = "^[0-9a-fA-F]{128}$")]
    pub signature: String,
    pub timestamp: Option<i64>,
}

/// `RevokeKey` (SPEC §8.1).
#[derive(ToSchema, Serialize)]
pub struct RevokeKeyRequest {
    #[schema(format = "uuid")]
    pub key_id: String,
    #[schema(pattern = "^[0-9a-fA-F]{128}$")]
    pub signature: String,
    pub timestamp: Option<i64>,
}

/// `RedeemKeyLink`.
#[derive(ToSchema, Serialize)]
pub struct RedeemRequest {
    /// The last path segment of the emailed link.
    #[schema(example = "J3m1hDmKuT0z0bBzq3xw8nqVJ8S5c5b6aTg3JmXfG4Q")]
    pub token: String,
    pub partner_code: String,
}

/// The link page's form.
#[derive(ToSchema, Serialize)]
pub struct LinkForm {
    pub partner_code: String,
}

// ---- responses ----

fn null_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::Null)
        .build()
}

fn error_data_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{SchemaType, Type};
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
        .build()
}

/// A success with no data.
#[derive(ToSchema, Serialize)]
pub struct MessageEnvelope {
    pub success: bool,
    pub message: String,
    #[schema(schema_with = null_schema)]
    pub data: (),
}

#[derive(ToSchema, Serialize)]
pub struct CredentialsEnvelope {
    pub success: bool,
    pub message: String,
    pub data: Credentials,
}

#[derive(ToSchema, Serialize)]
pub struct WhoAmIEnvelope {
    pub success: bool,
    pub message: String,
    pub data: WhoAmI,
}

/// `ListKeys`'s answer.
#[derive(ToSchema, Serialize)]
pub struct KeyListEnvelope {
    pub success: bool,
    pub message: String,
    pub data: KeyList,
}

/// `RevokeKey`'s answer.
#[derive(ToSchema, Serialize)]
pub struct RevokedKeysEnvelope {
    pub success: bool,
    pub message: String,
    pub data: RevokedKeys,
}

/// `RetireOldKeys`'s answer.
#[derive(ToSchema, Serialize)]
pub struct RetiredKeysEnvelope {
    pub success: bool,
    pub message: String,
    pub data: RetiredKeys,
}

/// `SetAllowedIps`'s answer.
#[derive(ToSchema, Serialize)]
pub struct AllowedIpsEnvelope {
    pub success: bool,
    pub message: String,
    pub data: AllowedIpsData,
}

/// `GET /api/v1/time`'s answer.
#[derive(ToSchema, Serialize)]
pub struct ServerTimeEnvelope {
    pub success: bool,
    pub message: String,
    pub data: ServerTime,
}

/// The verify API's answer.
#[derive(ToSchema, Serialize)]
pub struct VerifyEnvelope {
    pub success: bool,
    pub message: String,
    pub data: VerifyData,
}

/// `valid: true` with the partner, or `valid: false` with what to relay to it.
#[derive(ToSchema, Serialize)]
#[serde(untagged)]
pub enum VerifyData {
    Valid(VerifiedPartner),
    Invalid(VerifyRejection),
}

/// Every error: what went wrong and what to do, and the code.
#[derive(ToSchema, Serialize)]
#[schema(as = ErrorEnvelope)]
pub struct ErrorEnvelope {
    pub success: bool,
    pub message: String,
    /// `null`, except for `invalid_signature` (`{message_sha256: {as_sent, canonical}}`) and
    /// `stale_request` (`{server_time_ms, skew_ms}`).
    #[schema(schema_with = error_data_schema)]
    pub data: (),
    pub code: ErrorCode,
    /// Every bad field, for `missing_fields` and `invalid_field`.
    pub errors: Option<Vec<FieldProblem>>,
}

/// Errors every JSON route can give.
#[derive(IntoResponses)]
pub enum BodyErrors {
    /// `invalid_json`, `not_an_object`, `duplicate_member`, `missing_fields`, `invalid_field`.
    #[response(status = 400)]
    BadRequest(#[to_schema] ErrorEnvelope),
    /// `body_too_large`: over 64 KiB.
    #[response(status = 413)]
    TooLarge(ErrorEnvelope),
    /// `unsupported_media_type`: not `application/json`.
    #[response(status = 415)]
    MediaType(ErrorEnvelope),
    /// `internal_error`.
    #[response(status = 500)]
    Internal(ErrorEnvelope),
    /// `unavailable`: the database cannot be reached.
    #[response(status = 503)]
    Unavailable(ErrorEnvelope),
}

/// Errors of the signed routes.
#[derive(IntoResponses)]
pub enum AuthErrors {
    /// `missing_authorization`, `malformed_authorization`, `unknown_key`, `revoked_key`, `expired_key`, `invalid_signature` (data: `message_sha256`), `stale_request` (data: `server_time_ms`, `skew_ms`).
    #[response(status = 401)]
    Unauthorized(ErrorEnvelope),
    /// `partner_suspended`, `ip_not_allowed`, `partner_mismatch`, `email_mismatch`, `key_retiring` (a management route signed with the retiring pair).
    #[response(status = 403)]
    Forbidden(ErrorEnvelope),
}

/// `rate_limited`, with `Retry-After`.
#[derive(IntoResponses)]
pub enum RateLimited {
    #[response(status = 429, headers(("Retry-After" = u64, description = "Seconds to wait")))]
    TooMany(ErrorEnvelope),
}

/// Why a link cannot be used.
#[derive(IntoResponses)]
pub enum LinkErrors {
    /// `partner_suspended`.
    #[response(status = 403)]
    Suspended(ErrorEnvelope),
    /// `link_unknown`.
    #[response(status = 404)]
    Unknown(ErrorEnvelope),
    /// `link_used`, `link_expired` (expired or replaced by a newer link).
    #[response(status = 410)]
    Gone(ErrorEnvelope),
    /// `partner_code_mismatch`: nothing was consumed.
    #[response(status = 422)]
    Mismatch(ErrorEnvelope),
}

/// The link pages' answers other than the page itself: HTML pages with the same statuses.
#[derive(IntoResponses)]
pub enum PageErrors {
    /// The partner is suspended.
    #[response(status = 403, content_type = "text/html")]
    Suspended(String),
    /// The link is not known.
    #[response(status = 404, content_type = "text/html")]
    Unknown(String),
    /// The link was used, expired, or was replaced.
    #[response(status = 410, content_type = "text/html")]
    Gone(String),
    /// Too many requests.
    #[response(status = 429, content_type = "text/html")]
    TooMany(String),
    #[response(status = 500, content_type = "text/html")]
    Internal(String),
    #[response(status = 503, content_type = "text/html")]
    Unavailable(String),
}
