//! Signed routes: `GenKeysForPartner` (and its aliases), `RetireOldKeys`, `WhoAmI` and
//! `SetAllowedIps` (SPEC §3.2, §3.4, §3.4a). Every answer to a request made with a retiring
//! key carries `Keyward-Key-Expires`.

use super::answer::with_key_expiry;
use super::error::success;
use super::extract::{ClientIp, Fields, JsonBody};
use crate::error::Result;
use crate::flows::{self, Authenticated, Authorization, ClientAddress, Overlap};
use crate::state::AppState;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use keyward_core::allow_list::parse_entry;
use keyward_core::signature::SignedBody;
use keyward_core::wire::{paths, wire_time, AllowedIpsData, RetiredKeys, WhoAmI};
use keyward_core::{AllowedIps, Email, PartnerCode};

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

/// The signed routes that send no link email (no per-IP limit).
pub fn signed_router() -> Router<AppState> {
    Router::new()
        .route(paths::WHOAMI, post(whoami))
        .route(paths::RETIRE_OLD_KEYS, post(retire_old_keys))
        .route(paths::SET_ALLOWED_IPS, post(set_allowed_ips))
}

/// The checks of SPEC §3.2 on a request from `ip`, once its body's fields are valid.
async fn authenticated(
    state: &AppState,
    ip: std::net::IpAddr,
    authorization: &Authorization,
    body: &SignedBody,
) -> Result<Authenticated> {
    let client = ClientAddress::Known(ip);
    flows::authenticate(state, authorization.public_key()?, body, client).await
}

/// A signed route whose body needs nothing but `signature` (WhoAmI, RetireOldKeys).
async fn signed_only(
    state: &AppState,
    ip: std::net::IpAddr,
    authorization: &Authorization,
    body: &SignedBody,
) -> Result<Authenticated> {
    let mut fields = Fields::new(body);
    fields.require_signature();
    fields.finish()?;
    authenticated(state, ip, authorization, body).await
}

/// The answer of a signed route: `result` turned into a response, with the key's expiry.
fn answer(auth: &Authenticated, result: Result<Response>) -> Response {
    with_key_expiry(
        result.unwrap_or_else(IntoResponse::into_response),
        auth.key_expires_at,
    )
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
    let mut overlap = None;
    if !authorization.is_absent() {
        fields.require_signature();
        // Only the key holder may keep the old pair working; the lost-keys path ignores it
        // (the lost pair may be in someone else's hands).
        overlap = fields.integer(
            "overlap_seconds",
            0..=Overlap::MAX_SECONDS,
            &format!(
                "must be a whole number of seconds from 0 to {} (7 days)",
                Overlap::MAX_SECONDS
            ),
        );
    }
    let (email, code) = fields.finish_with(email.zip(code))?;
    // Typed at the edge; one that does not parse cannot be any partner's.
    let (code, email) = (PartnerCode::parse(&code), Email::parse(&email));
    if authorization.is_absent() {
        // Lost keys: the same answer, at the same speed, whether or not the pair matches. The
        // lookup and the link are done after answering, so neither the body, the headers nor
        // the time taken tell whether a partner has this code and email. A code or email that
        // cannot belong to any partner takes the same path.
        if let Some((code, email)) = code.zip(email) {
            super::background::after_answer(&state, "lost_keys", move |ctx| {
                let (code, email) = (code.clone(), email.clone());
                async move { flows::request_regeneration_without_keys(&ctx, &code, &email, ip).await }
            });
        }
        return Ok(success::<()>(REGENERATION_SENT_IF_MATCHED, None));
    }
    let auth = authenticated(&state, ip, &authorization, &body).await?;
    let overlap = overlap.and_then(Overlap::from_seconds).unwrap_or_default();
    let result = flows::request_regeneration(
        &state,
        &auth,
        code.as_ref(),
        email.as_ref(),
        overlap,
        &body,
        ip,
    )
    .await
    .map(|()| success::<()>(&regeneration_sent(overlap), None));
    Ok(answer(&auth, result))
}

fn regeneration_sent(overlap: Overlap) -> String {
    if overlap.seconds() == 0 {
        return REGENERATION_SENT.to_owned();
    }
    format!(
        "A link to regenerate your keys has been emailed to your registered address. Your current keys keep working until the link is used, and for {} after that.",
        overlap.describe()
    )
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
    let auth = signed_only(&state, ip, &authorization, &body).await?;
    let data = WhoAmI {
        partner_id: auth.partner.id.to_string(),
        partner_code: auth.partner.code.to_string(),
        key_created_at: wire_time(auth.key_created_at),
        key_expires_at: auth.key_expires_at.map(wire_time),
        allowed_ips: auth.partner.allowed_ips.to_strings(),
    };
    let message = match auth.key_expires_at {
        Some(_) => "Your request is signed correctly, with your retiring key pair: switch to the new one before key_expires_at.",
        None => "Your request is signed correctly.",
    };
    Ok(answer(&auth, Ok(success(message, Some(data)))))
}

/// End the retiring key pair now
///
/// Signed with the **current** key pair: the pair still working after a regeneration with an
/// overlap is revoked at once, on every node by the time this answers.
#[utoipa::path(
    post,
    path = "/api/v1/PartnerP2P/RetireOldKeys",
    tag = "signed",
    security(("partner_key" = [])),
    request_body(content = super::schemas::SignedRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "`revoked`: how many retiring pairs were revoked (0 or 1)", body = super::schemas::RetiredKeysEnvelope),
        super::schemas::AuthErrors,
        super::schemas::BodyErrors,
    )
)]
pub(crate) async fn retire_old_keys(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    authorization: Authorization,
    JsonBody { body, .. }: JsonBody,
) -> Result<Response> {
    let auth = signed_only(&state, ip, &authorization, &body).await?;
    let result = flows::retire_old_keys(&state, &auth, ip)
        .await
        .map(|revoked| {
            let message = match revoked {
                0 => "You had no retiring key pair: nothing was revoked.",
                _ => "Your retiring key pair is revoked: only your current keys work now.",
            };
            success(message, Some(RetiredKeys { revoked }))
        });
    Ok(answer(&auth, result))
}

/// Set the partner's IP allow-list
///
/// Replaces the allow-list: at most 20 IPv4/IPv6 addresses or CIDR blocks, `[]` for any
/// address. A list that does not include the address of this very request is refused with
/// 422 `would_lock_out` unless `confirm_lock_out` is `true`. In force on every node by the
/// time this answers; the partner is emailed a notice.
#[utoipa::path(
    post,
    path = "/api/v1/PartnerP2P/SetAllowedIps",
    tag = "signed",
    security(("partner_key" = [])),
    request_body(content = super::schemas::SetAllowedIpsRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The allow-list now in force, normalised", body = super::schemas::AllowedIpsEnvelope),
        super::schemas::AuthErrors,
        (status = 422, description = "`would_lock_out`", body = super::schemas::ErrorEnvelope),
        super::schemas::BodyErrors,
    )
)]
pub(crate) async fn set_allowed_ips(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    authorization: Authorization,
    JsonBody { body, .. }: JsonBody,
) -> Result<Response> {
    let mut fields = Fields::new(&body);
    fields.require_signature();
    let entries = fields.string_list(
        "allowed_ips",
        AllowedIps::MAX_ENTRIES,
        |s| parse_entry(s).ok(),
        "must be an IPv4 or IPv6 address or CIDR block, such as 203.0.113.7 or 2001:db8::/48",
    );
    let confirm_lock_out = fields.flag("confirm_lock_out");
    let allowed_ips = AllowedIps::from_entries(fields.finish_with(entries)?);
    let auth = authenticated(&state, ip, &authorization, &body).await?;
    let result = flows::set_allowed_ips(&state, &auth, &allowed_ips, confirm_lock_out, ip)
        .await
        .map(|()| {
            let message = if allowed_ips.is_empty() {
                "Your allow-list is empty: requests are accepted from any address."
            } else {
                "Your allow-list is set: requests are accepted only from these addresses."
            };
            let data = AllowedIpsData {
                allowed_ips: allowed_ips.to_strings(),
            };
            success(message, Some(data))
        });
    Ok(answer(&auth, result))
}
