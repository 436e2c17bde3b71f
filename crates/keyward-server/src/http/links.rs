//! One-time links (SPEC §3.3): the page (GET/HEAD changes nothing), the form that redeems it,
//! and `RedeemKeyLink` for programs.

use super::error::{success, PageError};
use super::extract::{ClientIp, Fields, JsonBody, RequestId};
use super::public_router::PublicRouter;
use super::views::{self, LinkPage};
use crate::error::{Error, Result};
use crate::flows::{self, Redeemed, Redemption};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use keyward_core::wire::{paths, Credentials};
use keyward_core::{ErrorCode, LinkPurpose, LinkToken};
use secrecy::ExposeSecret;
use serde::Deserialize;

pub fn router() -> PublicRouter {
    PublicRouter::new()
        .route(paths::LINK, get(show).post(redeem_form))
        .route(paths::REDEEM, post(redeem_json))
        .route(
            paths::STYLESHEET,
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
                    views::STYLESHEET,
                )
            }),
        )
        .route(
            paths::COPY_SCRIPT,
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    views::COPY_SCRIPT,
                )
            }),
        )
}

/// The link page
///
/// Says what the link does and until when, and asks for the partner code. Changes nothing
/// (mail scanners fetch links).
#[utoipa::path(
    get,
    path = "/link/{token}",
    tag = "links",
    params(("token" = String, Path, description = "The one-time token from the email")),
    responses(
        (status = 200, description = "The page", content_type = "text/html", body = String),
        super::schemas::PageErrors,
    )
)]
pub(crate) async fn show(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    token: Result<Path<String>, PathRejection>,
) -> Response {
    let token = match link_token(token) {
        Ok(token) => token,
        Err(error) => return PageError { error, request_id }.into_response(),
    };
    match flows::view_link(&state, &token).await {
        Ok(link) => views::link_page(&LinkPage {
            regeneration: link.purpose == LinkPurpose::Regeneration,
            expires_at: link.expires_at,
            overlap: link.overlap,
            now: state.clock.now(),
            error: None,
            typed_code: "",
            key: link.key.as_ref(),
        })
        .into_response(),
        Err(error) => PageError { error, request_id }.into_response(),
    }
}

#[derive(Deserialize)]
struct LinkForm {
    #[serde(default)]
    partner_code: String,
}

/// Use the link (the page's form)
///
/// A matching partner code uses the link and shows the keys once; a wrong one shows the page
/// again with 422 and uses nothing.
#[utoipa::path(
    post,
    path = "/link/{token}",
    tag = "links",
    params(("token" = String, Path, description = "The one-time token from the email")),
    request_body(content = super::schemas::LinkForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The keys, shown once", content_type = "text/html", body = String),
        (status = 422, description = "The partner code does not match; nothing was used", content_type = "text/html", body = String),
        super::schemas::PageErrors,
    )
)]
pub(crate) async fn redeem_form(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    RequestId(request_id): RequestId,
    token: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let token = match link_token(token) {
        Ok(token) => token,
        Err(error) => return PageError { error, request_id }.into_response(),
    };
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let code = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ErrorCode::BodyTooLarge
            } else {
                ErrorCode::InvalidJson
            };
            let error = code.into();
            return PageError { error, request_id }.into_response();
        }
    };
    // A form that cannot be read is treated as an empty code: the page asks again.
    let form: LinkForm = serde_urlencoded::from_bytes(&body).unwrap_or(LinkForm {
        partner_code: String::new(),
    });
    let typed = form.partner_code.trim();
    match flows::redeem(&state, &token, typed, ip).await {
        Ok(Redemption::Redeemed(redeemed)) => views::reveal_page(
            &credentials(&redeemed),
            redeemed.purpose == LinkPurpose::Regeneration,
            redeemed.old_keys_expire_at,
        )
        .into_response(),
        Ok(Redemption::Mismatch(link)) => {
            // Nothing was consumed: show the same page again, with the problem.
            let message = if typed.is_empty() {
                "Type your partner code to continue."
            } else {
                "That partner code does not match this link. Check it and try again."
            };
            let page = views::link_page(&LinkPage {
                regeneration: link.purpose == LinkPurpose::Regeneration,
                expires_at: link.expires_at,
                overlap: link.overlap,
                now: state.clock.now(),
                error: Some(message),
                typed_code: typed,
                key: link.key.as_ref(),
            });
            let mut response = (StatusCode::UNPROCESSABLE_ENTITY, page).into_response();
            // Counted like the JSON answer: 422 partner_code_mismatch, not ok.
            response
                .extensions_mut()
                .insert(ErrorCode::PartnerCodeMismatch);
            response
        }
        Err(error) => PageError { error, request_id }.into_response(),
    }
}

/// The credentials as shown once: the only place a new secret key leaves its `SecretKey`.
fn credentials(redeemed: &Redeemed) -> Credentials {
    Credentials {
        partner_id: redeemed.partner_id.to_string(),
        partner_code: redeemed.partner_code.to_string(),
        public_key: redeemed.keys.public.to_string(),
        secret_key: redeemed.keys.secret.expose_secret().to_owned(),
        old_keys_expire_at: redeemed
            .old_keys_expire_at
            .map(|t| keyward_core::wire::wire_time(t.timestamp_millis())),
        key: redeemed.key.clone(),
    }
}

/// Redeem a link (for programs)
///
/// The same as the page's form: uses the link and returns the credentials once.
#[utoipa::path(
    post,
    path = "/api/v1/no-auth/PartnerP2P/RedeemKeyLink",
    tag = "links",
    request_body(content = super::schemas::RedeemRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The credentials, shown once", body = super::schemas::CredentialsEnvelope),
        super::schemas::LinkErrors,
        super::schemas::BodyErrors,
    )
)]
pub(crate) async fn redeem_json(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    JsonBody { body, .. }: JsonBody,
) -> Result<Response> {
    let mut fields = Fields::new(&body);
    let token = fields.required("token", |s| Some(s.to_owned()), "");
    let code = fields.required("partner_code", |s| Some(s.to_owned()), "");
    let (token, code) = fields.finish_with(token.zip(code))?;
    let token = LinkToken::parse(&token).ok_or(Error::from(ErrorCode::LinkUnknown))?;
    match flows::redeem(&state, &token, &code, ip).await? {
        Redemption::Redeemed(redeemed) => Ok(success(
            "Here are your keys. Store the secret key safely now: it is not shown again.",
            Some(credentials(&redeemed)),
        )),
        Redemption::Mismatch(_) => Err(ErrorCode::PartnerCodeMismatch.into()),
    }
}

/// The link token of a page's path, parsed here at the edge: a path that does not decode, or
/// is not a token's format, is an unknown link (404) without touching storage.
fn link_token(path: Result<Path<String>, PathRejection>) -> Result<LinkToken> {
    path.ok()
        .and_then(|Path(text)| LinkToken::parse(&text))
        .ok_or(Error::from(ErrorCode::LinkUnknown))
}
