//! The internal listener's routes (SPEC §7.1, §3.5): the verify API for the exchange's own
//! services, `/metrics`, and their OpenAPI document. Never merged into the public router.

use super::error::{error_envelope, status_of, success};
use super::extract::{Fields, JsonBody};
use crate::clock::millis;
use crate::error::{Error, Result};
use crate::flows::service_tokens::CachedToken;
use crate::flows::{self, Authenticated, ClientAddress, Verdict, VerifyInput};
use crate::state::AppState;
use axum::extract::{FromRequestParts, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use keyward_core::allow_list::unmapped;
use keyward_core::wire::{paths, wire_time, RelayedError, VerifiedPartner, VerifyRejection};
use keyward_core::{ErrorCode, ServiceToken};
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use utoipa::OpenApi;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(paths::VERIFY, post(verify))
        .route(paths::METRICS, get(metrics))
        .route(paths::INTERNAL_OPENAPI, get(|| async { Json(document()) }))
}

/// A caller that presented a live service token.
pub struct ServiceCaller(pub Arc<CachedToken>);

impl FromRequestParts<AppState> for ServiceCaller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let mut values = parts.headers.get_all(header::AUTHORIZATION).iter();
        let token = match (values.next(), values.next()) {
            (Some(value), None) => value
                .to_str()
                .ok()
                .and_then(keyward_core::wire::bearer)
                .and_then(|token| ServiceToken::parse(token).ok()),
            _ => None,
        };
        let Some(token) = token else {
            return Err(ErrorCode::InvalidServiceToken.into());
        };
        let now = millis(state.clock.now());
        match state
            .service_tokens
            .check(&state.store, &token, now)
            .await?
        {
            Some(token) => Ok(ServiceCaller(token)),
            None => Err(ErrorCode::InvalidServiceToken.into()),
        }
    }
}

/// Verify a partner's request
///
/// Checks a partner's request exactly as keyward's own signed routes do (key, revocation,
/// suspension, IP allow-list, signature, freshness) and, with `single_use`, that the same
/// signed request was not accepted before. Answers 200 either way: `valid: true` with the
/// partner, or `valid: false` with the status and envelope the partner must receive.
#[utoipa::path(
    post,
    path = "/internal/v1/verify",
    tag = "internal",
    security(("service_token" = [])),
    request_body(content = keyward_core::wire::VerifyRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Verified: `data.valid` says whether the partner's request is valid", body = super::schemas::VerifyEnvelope),
        (status = 401, description = "`invalid_service_token`", body = super::schemas::ErrorEnvelope),
        super::schemas::BodyErrors,
    )
)]
pub(crate) async fn verify(
    State(state): State<AppState>,
    ServiceCaller(caller): ServiceCaller,
    JsonBody { body, .. }: JsonBody,
) -> Result<Response> {
    let mut fields = Fields::new(&body);
    let partner_body = fields.required("body", Some, "");
    let authorization = fields.optional("authorization", Some, "");
    let client_ip = fields.optional(
        "client_ip",
        |s| s.trim().parse::<IpAddr>().ok(),
        "must be an IPv4 or IPv6 address such as 203.0.113.7",
    );
    let single_use = fields.flag("single_use");
    let required_scopes = match body.get("required_scopes") {
        None | Some(keyward_core::json::Value::Null) => Some(Vec::new()),
        Some(_) => fields.string_list(
            "required_scopes",
            64,
            |s| keyward_core::scopes::is_scope_name(s).then(|| s.to_owned()),
            "must be a scope name such as payouts:write",
        ),
    };
    let (partner_body, required_scopes) = fields.finish_with(partner_body.zip(required_scopes))?;
    if let Some(known) = &state.settings.scopes.known {
        if let Some(i) = required_scopes.iter().position(|s| !known.contains(s)) {
            // The caller's mistake (a typo in its own code), told to it, not relayed.
            return Err(Error::field(
                &format!("required_scopes[{i}]"),
                "is not a scope of this exchange (KEYWARD_SCOPES)",
            ));
        }
    }
    let input = VerifyInput {
        authorization,
        body: partner_body,
        client: client_ip.map_or(ClientAddress::NotGiven, |ip| {
            ClientAddress::Known(unmapped(ip))
        }),
        single_use,
        required_scopes: &required_scopes,
    };
    let verdict = flows::verify(&state, input).await?;
    tracing::debug!(caller = %caller.name, valid = matches!(verdict, Verdict::Valid(_)), "verified");
    Ok(match verdict {
        Verdict::Valid(auth) => super::answer::with_key_expiry(
            success(
                "The partner's request is valid.",
                Some(verified(&state.settings.scopes, &auth)),
            ),
            auth.key_expires_at,
        ),
        Verdict::Invalid(error) => success(
            "The partner's request is not valid: relay `error` to it unchanged.",
            Some(rejection(&error)),
        ),
    })
}

pub(crate) fn verified(
    scopes: &crate::flows::key_policy::ScopeSettings,
    auth: &Authenticated,
) -> VerifiedPartner {
    VerifiedPartner {
        valid: true,
        partner_id: auth.partner.id.as_str().to_owned(),
        partner_code: auth.partner.code.as_str().to_owned(),
        key_id: auth.key_id.clone(),
        key_created_at: wire_time(auth.key_created_at),
        key_expires_at: auth.key_expires_at.map(wire_time),
        kind: auth.class.kind().to_owned(),
        name: auth.class.name().map(str::to_owned),
        scopes: scopes.granted(&auth.class),
        mode: auth.mode.as_str().to_owned(),
    }
}

fn rejection(error: &Error) -> VerifyRejection {
    let envelope = error_envelope(error);
    VerifyRejection {
        valid: false,
        error: RelayedError {
            status: status_of(error.code()).as_u16(),
            code: error.code().as_str().to_owned(),
            message: envelope.message,
            data: envelope.data,
            errors: envelope.errors,
        },
    }
}

/// The internal listener's OpenAPI document, built once.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOCUMENT.get_or_init(InternalDoc::openapi)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "keyward (internal)",
        description = "The internal listener: the verify API for the exchange's own services (service tokens) and Prometheus metrics. Never exposed on the public listener.",
        license(name = "Apache-2.0")
    ),
    paths(verify, metrics),
    components(schemas(super::schemas::ErrorEnvelope, keyward_core::wire::FieldProblem, ErrorCode)),
    modifiers(&ServiceTokenScheme),
    tags(
        (name = "internal", description = "For the exchange's own services"),
        (name = "operations", description = "Metrics")
    )
)]
struct InternalDoc;

/// `Authorization: Bearer kw_service_…`.
struct ServiceTokenScheme;

impl utoipa::Modify for ServiceTokenScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        super::openapi::add_bearer_scheme(
            openapi,
            "service_token",
            "kw_service_ + 30 base62 + 6-char checksum",
            "A service token from `keyward service-token create NAME`.",
        );
    }
}

/// Prometheus metrics
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "OpenMetrics text (Prometheus)", content_type = "application/openmetrics-text", body = String),
    )
)]
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let now = crate::clock::millis(state.clock.now());
    let entries = state.key_cache.entries().await;
    let text = state.metrics.scrape(&state.store, now, entries).await;
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
