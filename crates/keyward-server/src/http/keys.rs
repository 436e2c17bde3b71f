//! Signed routes: `GenKeysForPartner` (and its aliases) and `WhoAmI` (SPEC §3.2, §3.4).

use super::error::success;
use super::extract::{ClientIp, Fields, JsonBody};
use crate::clock::from_millis;
use crate::error::Result;
use crate::flows::{self, Authorization, ClientAddress};
use crate::state::AppState;
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use chrono::SecondsFormat;
use keyward_core::wire::{paths, WhoAmI};
use keyward_core::{Email, PartnerCode};

pub const REGENERATION_SENT: &str =
    "A link to regenerate your keys has been emailed to your registered address. Your current keys keep working until the link is used.";
/// The one answer of the lost-keys path, whether or not the details match a partner.
pub const REGENERATION_SENT_IF_MATCHED: &str = "If this partner code and email match a partner, a link to get new keys has been emailed to its registered address. Current keys keep working until the link is used.";

/// The regeneration routes (rate-limited per IP by the caller).
pub fn regenerate_router() -> Router<AppState> {
    paths::REGENERATE_ALL
        .iter()
        .fold(Router::new(), |router, path| {
            router.route(path, post(regenerate))
        })
}

pub fn whoami_router() -> Router<AppState> {
    Router::new().route(paths::WHOAMI, post(whoami))
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
    request_body(content = super::schemas::RegenerateRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Link emailed (or, without Authorization, emailed if the pair matches)", body = super::schemas::MessageEnvelope),
        super::schemas::AuthErrors,
        super::schemas::RateLimited,
        super::schemas::BodyErrors,
    )
)]
pub(crate) async fn regenerate(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    authorization: Authorization,
    JsonBody { body, .. }: JsonBody,
) -> Result<Response> {
    let mut fields = Fields::new(&body);
    let email = fields.required("email", |s| Some(s.to_owned()), "");
    let code = fields.required("partner_code", |s| Some(s.to_owned()), "");
    if !authorization.is_absent() {
        fields.require_signature();
    }
    let (email, code) = fields.finish_with(email.zip(code))?;
    if authorization.is_absent() {
        // Lost keys: the same answer, at the same speed, whether or not the pair matches. The
        // lookup and the link are done after answering, so neither the body, the headers nor
        // the time taken tell whether a partner has this code and email. A code or email that
        // cannot belong to any partner takes the same path.
        // At most so many are handled at once; past that (a flood from many addresses) a
        // request is dropped, as the limits would have dropped it.
        let pair = PartnerCode::parse(&code).zip(Email::parse(&email));
        let Ok(slot) = state.lost_keys_slots.clone().try_acquire_owned() else {
            tracing::warn!(
                "lost-keys requests are arriving faster than they can be handled: one was dropped"
            );
            return Ok(success::<()>(REGENERATION_SENT_IF_MATCHED, None));
        };
        let task_state = state.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let Some((code, email)) = pair else { return };
            if let Err(e) =
                flows::request_regeneration_without_keys(&task_state, &code, &email, ip).await
            {
                tracing::warn!(error = %e, "a lost-keys request could not be handled");
            }
        });
        return Ok(success::<()>(REGENERATION_SENT_IF_MATCHED, None));
    }
    let client = ClientAddress::Known(ip);
    let auth = flows::authenticate(&state, authorization.public_key()?, &body, client).await?;
    flows::request_regeneration(&state, &auth, &code, &email, &body, ip).await?;
    Ok(success::<()>(REGENERATION_SENT, None))
}

/// Who am I: a signed ping
///
/// Checks the key and the signature of the body and says whose key it is.
#[utoipa::path(
    post,
    path = "/api/v1/PartnerP2P/WhoAmI",
    tag = "signed",
    security(("partner_key" = [])),
    request_body(content = super::schemas::SignedRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Signed correctly", body = super::schemas::WhoAmIEnvelope),
        super::schemas::AuthErrors,
        super::schemas::BodyErrors,
    )
)]
pub(crate) async fn whoami(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    authorization: Authorization,
    JsonBody { body, .. }: JsonBody,
) -> Result<Response> {
    let mut fields = Fields::new(&body);
    fields.require_signature();
    fields.finish()?;
    let client = ClientAddress::Known(ip);
    let auth = flows::authenticate(&state, authorization.public_key()?, &body, client).await?;
    let data = WhoAmI {
        partner_id: auth.partner.id.to_string(),
        partner_code: auth.partner.code.to_string(),
        key_created_at: from_millis(auth.key_created_at)
            .to_rfc3339_opts(SecondsFormat::Millis, true),
    };
    Ok(success("Your request is signed correctly.", Some(data)))
}
