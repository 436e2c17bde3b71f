//! GitHub's secret scanning partner endpoint (SPEC §9.2): `POST /api/v1/secret-scanning/github`,
//! served only with `KEYWARD_GITHUB_SECRET_SCANNING=on`. The raw body is verified against
//! GitHub's published key before it is parsed; the answer is GitHub's feedback array, not
//! keyward's envelope (GitHub would not read it).

use super::public_router::PublicRouter;
use crate::error::{Error, Result};
use crate::flows::leaks::{self, Leak, Reporter};
use crate::github::Rejection;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Json;
use keyward_core::wire::paths;
use keyward_core::ErrorCode;
use serde::{Deserialize, Serialize};

/// GitHub sends batches; larger than the partner API's 64 KiB.
const BODY_LIMIT: usize = 1 << 20;
/// Tokens per report, each one lookup (and maybe one transaction).
const MAX_TOKENS: usize = 1000;

pub fn router() -> PublicRouter {
    PublicRouter::new()
        .route(paths::GITHUB_SECRET_SCANNING, post(report))
        .route_layer(DefaultBodyLimit::max(BODY_LIMIT))
}

/// One token GitHub found.
#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct FoundToken {
    token: String,
    /// GitHub's name for the token's type, echoed in the feedback.
    #[serde(rename = "type")]
    token_type: Option<String>,
    /// Where it was found.
    url: Option<String>,
    /// `content`, `commit`, `pull_request`, `gist`, …
    source: Option<String>,
}

/// GitHub's feedback for one token.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Feedback {
    /// Lower-case hex SHA-256 of the token.
    token_hash: String,
    token_type: String,
    /// `true_positive` for every token that is or was ours, else `false_positive`.
    label: &'static str,
}

/// GitHub secret scanning reports leaked tokens
///
/// Each token that is a current or retiring key of a partner is revoked (or, with
/// `KEYWARD_LEAK_ACTION=notify`, only announced) and the partner emailed; every leak is
/// audited. Served only with `KEYWARD_GITHUB_SECRET_SCANNING=on`.
#[utoipa::path(
    post,
    path = "/api/v1/secret-scanning/github",
    tag = "secret scanning",
    request_body = Vec<FoundToken>,
    params(
        ("Github-Public-Key-Identifier" = String, Header, description = "Which of GitHub's published keys signed the body"),
        ("Github-Public-Key-Signature" = String, Header, description = "Base64 DER ECDSA P-256 / SHA-256 signature of the raw body"),
    ),
    responses(
        (status = 200, description = "GitHub's feedback: one entry per token", body = Vec<Feedback>),
        (status = 400, description = "`invalid_json` or `invalid_field`: the body is not an array of tokens", body = super::schemas::ErrorEnvelope),
        (status = 401, description = "`invalid_signature`: not signed by a key GitHub publishes", body = super::schemas::ErrorEnvelope),
        (status = 413, description = "`body_too_large`", body = super::schemas::ErrorEnvelope),
        (status = 503, description = "`unavailable`: GitHub's keys or the database could not be reached; GitHub retries", body = super::schemas::ErrorEnvelope),
    )
)]
pub(crate) async fn report(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let Some(keys) = &state.github_keys else {
        return Err(ErrorCode::NotFound.into());
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    keys.verify(
        header("github-public-key-identifier"),
        header("github-public-key-signature"),
        &body,
    )
    .await
    .map_err(|rejection| match rejection {
        Rejection::KeysUnavailable(cause) => Error::Unavailable(cause),
        other => Error::Code(ErrorCode::InvalidSignature, Some(other.to_string())),
    })?;
    let found: Vec<FoundToken> = serde_json::from_slice(&body).map_err(|_| {
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(_) => Error::field("body", "must be an array of {token, type, url, source}"),
            Err(_) => ErrorCode::InvalidJson.into(),
        }
    })?;
    if found.len() > MAX_TOKENS {
        return Err(Error::field("body", "at most 1000 tokens per request"));
    }
    let reported: Vec<Leak<'_>> = found
        .iter()
        .map(|f| Leak {
            token: &f.token,
            url: f.url.as_deref(),
            source: f.source.as_deref(),
        })
        .collect();
    let verdicts = leaks::report(&state, &reported, Reporter::GitHub).await?;
    let feedback: Vec<Feedback> = found
        .iter()
        .zip(verdicts)
        .map(|(f, verdict)| Feedback {
            token_hash: verdict.token_sha256,
            token_type: f.token_type.clone().unwrap_or_default(),
            label: if verdict.outcome.ours() {
                "true_positive"
            } else {
                "false_positive"
            },
        })
        .collect();
    Ok(Json(feedback).into_response())
}
