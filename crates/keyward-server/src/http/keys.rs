//! Signed routes: `GenKeysForPartner` (and its aliases) and `WhoAmI` (SPEC §3.2, §3.4).

use super::error::success;
use super::extract::{ClientIp, Fields, JsonBody};
use crate::clock::from_millis;
use crate::error::Result;
use crate::flows;
use crate::state::AppState;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use chrono::SecondsFormat;
use keyward_core::wire::WhoAmI;
use keyward_core::{Email, PartnerCode};

/// The documented route, and the aliases the published API uses. `OnboardPartner.` (with a
/// trailing dot) is printed in the published page's header, so clients call it.
pub const REGENERATE_PATHS: [&str; 3] = [
    "/api/v1/no-auth/PartnerP2P/GenKeysForPartner",
    "/api/v1/no-auth/PartnerP2P/ResetPartnerKeys",
    "/api/v1/no-auth/PartnerP2P/OnboardPartner.",
];
pub const WHOAMI_PATH: &str = "/api/v1/PartnerP2P/WhoAmI";

pub const REGENERATION_SENT: &str =
    "A link to regenerate your keys has been emailed to your registered address. Your current keys keep working until the link is used.";
/// The one answer of the lost-keys path, whether or not the details match a partner.
pub const REGENERATION_SENT_IF_MATCHED: &str = "If this partner code and email match a partner, a link to get new keys has been emailed to its registered address. Current keys keep working until the link is used.";

/// The regeneration routes (rate-limited per IP by the caller).
pub fn regenerate_router() -> Router<AppState> {
    REGENERATE_PATHS.iter().fold(Router::new(), |router, path| {
        router.route(path, post(regenerate))
    })
}

pub fn whoami_router() -> Router<AppState> {
    Router::new().route(WHOAMI_PATH, post(whoami))
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    // A header that is not visible ASCII cannot hold a key: treat it as malformed, not absent.
    headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("\u{0}"))
}

/// Regenerate a partner's keys
///
/// With `Authorization`, after checking key, signature, partner code and email, emails a
/// regeneration link; the current keys keep working until it is used. Without it (lost keys),
/// the answer is always the same, and a link is emailed only when the pair matches a partner.
#[utoipa::path(
    post,
    path = "/api/v1/no-auth/PartnerP2P/GenKeysForPartner",
    tag = "partners",
    security((), ("partner_key" = [])),
    request_body(content = super::openapi::RegenerateRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Link emailed (or, without Authorization, emailed if the pair matches)", body = super::openapi::MessageEnvelope),
        super::openapi::AuthErrors,
        super::openapi::RateLimited,
        super::openapi::BodyErrors,
    )
)]
pub(crate) async fn regenerate(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    JsonBody { raw, body }: JsonBody,
) -> Result<Response> {
    let authorization = authorization(&headers);
    let mut fields = Fields::new(&body);
    let email = fields.required("email", |s| Some(s.to_owned()), "");
    let code = fields.required("partner_code", |s| Some(s.to_owned()), "");
    if authorization.is_some() {
        fields.require_signature();
    }
    let (email, code) = fields.finish_with(email.zip(code))?;
    match authorization {
        Some(header) => {
            let auth = flows::authenticate(&state, Some(header), &body, ip).await?;
            flows::request_regeneration(&state, &auth, &code, &email, &raw, ip).await?;
            Ok(success::<()>(REGENERATION_SENT, None))
        }
        None => {
            // Lost keys: a code or email that cannot belong to any partner gets the same answer
            // as one that merely does not match, so nothing can be learned from it.
            if let (Some(code), Some(email)) = (PartnerCode::parse(&code), Email::parse(&email)) {
                flows::request_regeneration_without_keys(&state, &code, &email, ip).await?;
            }
            Ok(success::<()>(REGENERATION_SENT_IF_MATCHED, None))
        }
    }
}

/// Who am I: a signed ping
///
/// Checks the key and the signature of the body and says whose key it is.
#[utoipa::path(
    post,
    path = "/api/v1/PartnerP2P/WhoAmI",
    tag = "signed",
    security(("partner_key" = [])),
    request_body(content = super::openapi::SignedRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Signed correctly", body = super::openapi::WhoAmIEnvelope),
        super::openapi::AuthErrors,
        super::openapi::BodyErrors,
    )
)]
pub(crate) async fn whoami(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    JsonBody { body, .. }: JsonBody,
) -> Result<Response> {
    let mut fields = Fields::new(&body);
    fields.require_signature();
    fields.finish()?;
    let auth = flows::authenticate(&state, authorization(&headers), &body, ip).await?;
    let data = WhoAmI {
        partner_id: auth.partner.id,
        partner_code: auth.partner.code,
        key_created_at: from_millis(auth.key_created_at)
            .to_rfc3339_opts(SecondsFormat::Millis, true),
    };
    Ok(success("Your request is signed correctly.", Some(data)))
}
