//! `POST /api/v1/no-auth/PartnerP2P/OnboardPartner` (SPEC §3.1).

use super::error::success;
use super::extract::{ClientIp, Fields, JsonBody};
use crate::error::Result;
use crate::flows;
use crate::state::AppState;
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use keyward_core::wire::ONBOARD_MESSAGE;
use keyward_core::{Email, PartnerCode};

pub const ONBOARD_PATH: &str = "/api/v1/no-auth/PartnerP2P/OnboardPartner";

/// The routes that send email are rate-limited per client IP by the caller of `router()`.
pub fn router() -> Router<AppState> {
    Router::new().route(ONBOARD_PATH, post(onboard))
}

async fn onboard(
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
    flows::onboard(&state, &code, &email, ip).await?;
    Ok(success::<()>(ONBOARD_MESSAGE, None))
}
