//! `POST /api/v1/no-auth/PartnerP2P/OnboardPartner` (SPEC §3.1).

use super::error::success;
use super::extract::{ClientIp, Fields, JsonBody};
use super::public_router::PublicRouter;
use crate::config::Onboarding;
use crate::error::Result;
use crate::flows;
use crate::state::AppState;
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use keyward_core::wire::{paths, ONBOARD_MESSAGE};
use keyward_core::{Email, PartnerCode};

/// The routes that send email are rate-limited per client IP by the caller of `router()`.
pub fn router() -> PublicRouter {
    PublicRouter::new().route(paths::ONBOARD, post(onboard))
}

/// Onboard a partner
///
/// A new code creates the partner (pending) and emails it a one-time link to its first keys.
/// The same code and email again, while pending, emails a fresh link that replaces the first.
#[utoipa::path(
    post,
    path = "/api/v1/no-auth/PartnerP2P/OnboardPartner",
    tag = "partners",
    request_body(content = super::schemas::OnboardRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Link emailed", body = super::schemas::MessageEnvelope),
        (status = 409, description = "`partner_exists`", body = super::schemas::ErrorEnvelope),
        super::schemas::RateLimited,
        super::schemas::BodyErrors,
    )
)]
pub(crate) async fn onboard(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    JsonBody { body, .. }: JsonBody,
) -> Result<Response> {
    let mut fields = Fields::new(&body);
    let code = fields.required(
        "partner_code",
        PartnerCode::parse,
        "must be 1 to 64 of A-Z a-z 0-9 . _ -",
    );
    let email = fields.required(
        "email",
        Email::parse,
        "must be an email address such as ops@example.com",
    );
    let (code, email) = fields.finish_with(code.zip(email))?;
    if state.settings.onboarding == Onboarding::Invite {
        // Invite only: the same answer, at once, whatever the code; the work is done after
        // answering, as on the lost-keys path, so neither the answer nor its timing tells
        // which codes were invited.
        super::background::after_answer(&state, "invited_onboarding", move |ctx| {
            let (code, email) = (code.clone(), email.clone());
            async move { flows::onboard_invited(&ctx, &code, &email, ip).await }
        });
        return Ok(success::<()>(ONBOARD_MESSAGE, None));
    }
    flows::onboard(&state, &code, &email, ip).await?;
    Ok(success::<()>(ONBOARD_MESSAGE, None))
}
