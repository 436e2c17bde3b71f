//! Signed routes: `GenKeysForPartner` (and its aliases), `RetireOldKeys`, `WhoAmI`,
//! `SetAllowedIps` (SPEC §3.2, §3.4, §3.4a) and the restricted keys' `CreateKey`, `ListKeys`,
//! `RevokeKey` (§8.1). Every answer to a request made with a key that expires carries
//! `Keyward-Key-Expires`.

use super::answer::with_key_expiry;
use super::error::success;
use super::extract::{ClientIp, Fields, JsonBody};
use super::public_router::PublicRouter;
use crate::error::Result;
use crate::flows::{self, Authenticated, Authorization, ClientAddress, Overlap};
use crate::state::AppState;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use keyward_core::allow_list::parse_entry;
use keyward_core::signature::SignedBody;
use keyward_core::wire::{
    paths, wire_time, AllowedIpsData, KeyList, RetiredKeys, RevokedKeys, WhoAmI,
};
use keyward_core::{AllowedIps, Email, KeyMode, PartnerCode};

pub const REGENERATION_SENT: &str =
    "A link to regenerate your keys has been emailed to your registered address. Your current keys keep working until the link is used.";
/// The one answer of the lost-keys path, whether or not the details match a partner.
pub const REGENERATION_SENT_IF_MATCHED: &str = "If this partner code and email match a partner, a link to get new keys has been emailed to its registered address. Current keys keep working until the link is used.";

/// The regeneration routes (rate-limited per IP by the caller).
pub fn regenerate_router() -> PublicRouter {
    paths::REGENERATE_ALL
        .iter()
        .fold(PublicRouter::new(), |router, path| {
            router.route(path, post(regenerate))
        })
}

/// The signed routes that send no link email (no per-IP limit).
pub fn signed_router() -> PublicRouter {
    PublicRouter::new()
        .route(paths::WHOAMI, post(whoami))
        .route(paths::RETIRE_OLD_KEYS, post(retire_old_keys))
        .route(paths::SET_ALLOWED_IPS, post(set_allowed_ips))
        .route(paths::LIST_KEYS, post(list_keys))
        .route(paths::REVOKE_KEY, post(revoke_key))
}

/// The signed routes that email a link without being a regeneration (no per-IP limit: the
/// per-partner budget of emailed links applies).
pub fn create_key_router() -> PublicRouter {
    PublicRouter::new().route(paths::CREATE_KEY, post(create_key))
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
        partner_id: auth.partner.id.as_str().to_owned(),
        partner_code: auth.partner.code.as_str().to_owned(),
        key_created_at: wire_time(auth.key_created_at),
        key_expires_at: auth.key_expires_at.map(wire_time),
        allowed_ips: auth.partner.allowed_ips.to_strings(),
        key_id: auth.key_id.clone(),
        kind: auth.class.kind().to_owned(),
        name: auth.class.name().map(str::to_owned),
        scopes: state.settings.scopes.granted(&auth.class),
        mode: auth.mode.as_str().to_owned(),
        state: if auth.retiring { "retiring" } else { "current" }.to_owned(),
    };
    let message = match (auth.retiring, auth.key_expires_at) {
        (true, _) => "Your request is signed correctly, with your retiring key pair: switch to the new one before key_expires_at.",
        (false, Some(_)) => "Your request is signed correctly. This key pair expires at key_expires_at.",
        (false, None) => "Your request is signed correctly.",
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

/// Ask for a restricted or test key pair
///
/// Signed with the **primary** key pair: emails a one-time link to a new pair with a name,
/// scopes, a mode (`live` or `test`) and an optional expiry; the page shows it once. Nothing
/// else changes. At most 10 pairs per partner (409 `key_limit_reached`); the link counts
/// toward the partner's emailed-link budget.
#[utoipa::path(
    post,
    path = "/api/v1/PartnerP2P/CreateKey",
    tag = "keys",
    security(("partner_key" = [])),
    request_body(content = super::schemas::CreateKeyRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Link emailed", body = super::schemas::MessageEnvelope),
        super::schemas::AuthErrors,
        (status = 409, description = "`key_limit_reached`", body = super::schemas::ErrorEnvelope),
        super::schemas::RateLimited,
        super::schemas::BodyErrors,
    )
)]
pub(crate) async fn create_key(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    authorization: Authorization,
    JsonBody { body, .. }: JsonBody,
) -> Result<Response> {
    let mut fields = Fields::new(&body);
    fields.require_signature();
    let name = fields.required(
        "name",
        |s| {
            let ok = (1..=64).contains(&s.chars().count()) && !s.chars().any(char::is_control);
            ok.then(|| s.to_owned())
        },
        "must be 1 to 64 printable characters",
    );
    let scopes = match body.get("scopes") {
        None | Some(keyward_core::json::Value::Null) => Some(None),
        Some(_) => fields
            .string_list(
                "scopes",
                64,
                |s| keyward_core::scopes::is_scope_name(s).then(|| s.to_owned()),
                "must be a scope name such as payouts:write",
            )
            .map(Some),
    };
    let mode = fields
        .optional("mode", KeyMode::parse, "must be live or test")
        .unwrap_or_default();
    let valid_days = fields.integer(
        "expires_in_days",
        1..=366,
        "must be a whole number of days from 1 to 366",
    );
    let (name, scopes) = fields.finish_with(name.zip(scopes))?;
    let auth = authenticated(&state, ip, &authorization, &body).await?;
    let result = async {
        let request = flows::KeyRequest {
            name,
            scopes,
            mode,
            valid_days,
        };
        let key = request.check(&state)?;
        flows::create_key(&state, &auth, &key, &body, ip).await?;
        Ok(success::<()>(
            "A link to your new key pair has been emailed to your registered address. The pair is shown once, when the link is used.",
            None,
        ))
    }
    .await;
    Ok(answer(&auth, result))
}

/// List the partner's key pairs
///
/// Signed with the primary key pair: every pair that works (or retires), with its kind,
/// name, scopes, mode, expiry and last use. Never a secret, never a whole public key.
#[utoipa::path(
    post,
    path = "/api/v1/PartnerP2P/ListKeys",
    tag = "keys",
    security(("partner_key" = [])),
    request_body(content = super::schemas::SignedRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The pairs", body = super::schemas::KeyListEnvelope),
        super::schemas::AuthErrors,
        super::schemas::BodyErrors,
    )
)]
pub(crate) async fn list_keys(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    authorization: Authorization,
    JsonBody { body, .. }: JsonBody,
) -> Result<Response> {
    let auth = signed_only(&state, ip, &authorization, &body).await?;
    let result = flows::list_keys(&state, &auth)
        .await
        .map(|keys| success("Your key pairs.", Some(KeyList { keys })));
    Ok(answer(&auth, result))
}

/// Revoke one restricted key pair
///
/// Signed with the primary key pair: the pair `key_id` is revoked, on every node by the time
/// this answers. The primary pair is replaced by regeneration instead.
#[utoipa::path(
    post,
    path = "/api/v1/PartnerP2P/RevokeKey",
    tag = "keys",
    security(("partner_key" = [])),
    request_body(content = super::schemas::RevokeKeyRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "`revoked`: 1, or 0 if it was revoked already", body = super::schemas::RevokedKeysEnvelope),
        super::schemas::AuthErrors,
        super::schemas::BodyErrors,
    )
)]
pub(crate) async fn revoke_key(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    authorization: Authorization,
    JsonBody { body, .. }: JsonBody,
) -> Result<Response> {
    let mut fields = Fields::new(&body);
    fields.require_signature();
    let key_id = fields.required(
        "key_id",
        |s| uuid::Uuid::parse_str(s).ok().map(|id| id.to_string()),
        "must be a key id as ListKeys shows it",
    );
    let key_id = fields.finish_with(key_id)?;
    let auth = authenticated(&state, ip, &authorization, &body).await?;
    let result = flows::revoke_key(&state, &auth, &key_id, ip)
        .await
        .map(|revoked| {
            let message = match revoked {
                0 => "This key pair was revoked already.",
                _ => "The key pair is revoked: no node accepts it any more.",
            };
            success(message, Some(RevokedKeys { revoked }))
        });
    Ok(answer(&auth, result))
}
