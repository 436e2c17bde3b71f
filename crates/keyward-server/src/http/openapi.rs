//! `GET /openapi.json`: the OpenAPI 3.1 document of every route, generated from the handlers'
//! `#[utoipa::path]` annotations and the schemas below. Schemathesis checks in CI that every
//! answer the server gives matches it.

use super::keys::REGENERATE_PATHS;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use std::sync::OnceLock;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};

pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/openapi.json", get(|| async { Json(document()) }))
}

/// The document, built once.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOCUMENT.get_or_init(ApiDoc::openapi)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "keyward",
        description = "Partner credentials for a payment API: onboarding through one-time emailed links, HMAC-SHA512 signed requests, key regeneration. Compatible with Fuspay's partner API.",
        license(name = "Apache-2.0")
    ),
    paths(
        super::onboarding::onboard,
        super::keys::regenerate,
        super::keys::whoami,
        super::links::show,
        super::links::redeem_form,
        super::links::redeem_json,
        super::ops::healthz,
        super::ops::readyz,
        super::ops::metrics,
    ),
    components(schemas(ErrorEnvelope, FieldProblemSchema, ErrorCodeSchema)),
    modifiers(&Aliases, &BearerKey),
    tags(
        (name = "partners", description = "Onboarding and regeneration (emails a one-time link)"),
        (name = "signed", description = "Requests signed with the partner's keys"),
        (name = "links", description = "One-time links"),
        (name = "operations", description = "Health and metrics")
    )
)]
struct ApiDoc;

/// The aliases of the regeneration route share its description (operation ids stay unique).
struct Aliases;

impl Modify for Aliases {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(item) = openapi.paths.paths.get(REGENERATE_PATHS[0]).cloned() else {
            return;
        };
        for (i, alias) in REGENERATE_PATHS.iter().enumerate().skip(1) {
            let mut alias_item = item.clone();
            if let Some(post) = alias_item.post.as_mut() {
                post.operation_id = Some(format!("regenerate_alias_{i}"));
                post.summary = Some(format!("Alias of {}", REGENERATE_PATHS[0]));
            }
            openapi.paths.paths.insert((*alias).to_owned(), alias_item);
        }
    }
}

/// `Authorization: Bearer pk_partner_…` on the signed routes.
struct BearerKey;

impl Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("pk_partner_ + 30 base62 + 6-char checksum")
            .description(Some("The partner's public key. The body also carries `signature`: lower-case hex HMAC-SHA512 of the body without it, keyed with the secret key."))
            .build();
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme("partner_key", SecurityScheme::Http(scheme));
        }
    }
}

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
}

/// A signed body: `signature` and any other members (all covered by the signature).
#[derive(ToSchema, Serialize)]
pub struct SignedRequest {
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

/// A success with no data.
#[derive(ToSchema, Serialize)]
pub struct MessageEnvelope {
    pub success: bool,
    pub message: String,
    #[schema(schema_with = null_schema)]
    pub data: (),
}

#[derive(ToSchema, Serialize)]
pub struct CredentialsData {
    #[schema(format = "uuid")]
    pub partner_id: String,
    pub partner_code: String,
    #[schema(example = "pk_partner_BSB8wIYc6sE7hIysyRYv9Z0oCJif3k38fgkq")]
    pub public_key: String,
    /// Shown once; store it safely.
    pub secret_key: String,
}

#[derive(ToSchema, Serialize)]
pub struct CredentialsEnvelope {
    pub success: bool,
    pub message: String,
    pub data: CredentialsData,
}

#[derive(ToSchema, Serialize)]
pub struct WhoAmIData {
    #[schema(format = "uuid")]
    pub partner_id: String,
    pub partner_code: String,
    #[schema(format = "date-time")]
    pub key_created_at: String,
}

#[derive(ToSchema, Serialize)]
pub struct WhoAmIEnvelope {
    pub success: bool,
    pub message: String,
    pub data: WhoAmIData,
}

/// Every error: what went wrong and what to do, and the code.
#[derive(ToSchema, Serialize)]
#[schema(as = ErrorEnvelope)]
pub struct ErrorEnvelope {
    pub success: bool,
    pub message: String,
    #[schema(schema_with = null_schema)]
    pub data: (),
    pub code: ErrorCodeSchema,
    /// Every bad field, for `missing_fields` and `invalid_field`.
    pub errors: Option<Vec<FieldProblemSchema>>,
}

#[derive(ToSchema, Serialize)]
#[schema(as = FieldProblem)]
pub struct FieldProblemSchema {
    pub field: String,
    pub problem: String,
}

/// The spec's error codes (`keyward_core::ErrorCode`; a test checks that both list the same).
#[derive(ToSchema, Serialize)]
#[schema(as = ErrorCode)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCodeSchema {
    InvalidJson,
    NotAnObject,
    DuplicateMember,
    MissingFields,
    InvalidField,
    MissingAuthorization,
    MalformedAuthorization,
    UnknownKey,
    RevokedKey,
    InvalidSignature,
    StaleRequest,
    PartnerSuspended,
    IpNotAllowed,
    PartnerMismatch,
    EmailMismatch,
    NotFound,
    LinkUnknown,
    MethodNotAllowed,
    PartnerExists,
    PartnerCodeMismatch,
    LinkUsed,
    LinkExpired,
    BodyTooLarge,
    UnsupportedMediaType,
    RateLimited,
    InternalError,
    Unavailable,
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
    /// `missing_authorization`, `malformed_authorization`, `unknown_key`, `revoked_key`, `invalid_signature`, `stale_request`.
    #[response(status = 401)]
    Unauthorized(ErrorEnvelope),
    /// `partner_suspended`, `ip_not_allowed`, `partner_mismatch`, `email_mismatch`.
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
