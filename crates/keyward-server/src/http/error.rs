//! The one place where errors become responses: the JSON envelope of SPEC §3 for the API,
//! an HTML page with the same status for the link pages.

use crate::error::Error;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use keyward_core::wire::{Envelope, FieldProblem};
use keyward_core::ErrorCode;
use serde::Serialize;

pub fn status_of(code: ErrorCode) -> StatusCode {
    StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// `{"success": true, "message": …, "data": …}`.
pub fn success<T: Serialize>(message: &str, data: Option<T>) -> Response {
    envelope(
        StatusCode::OK,
        &Envelope {
            success: true,
            message: message.to_owned(),
            data,
            code: None,
            errors: None,
        },
    )
}

/// How many headers an envelope's answer is made with room for.
pub(crate) const ANSWER_HEADERS: usize = 12;

/// An envelope as a JSON answer. Written into a buffer sized for the common answers at once
/// (axum's `Json` starts at 128 bytes and grows a WhoAmI's answer three times).
fn envelope<T: Serialize>(status: StatusCode, body: &Envelope<T>) -> Response {
    let mut buffer = Vec::with_capacity(1024);
    match serde_json::to_writer(&mut buffer, body) {
        Ok(()) => {
            let mut response = Response::new(axum::body::Body::from(buffer));
            *response.status_mut() = status;
            // Room for every header an answer gets on its way out (the edge's six, a key's
            // expiry, `Retry-After`): one allocation, never a rehash as they are added.
            *response.headers_mut() = HeaderMap::with_capacity(ANSWER_HEADERS);
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        // Our own types, with string keys: serde_json cannot fail on them, but if it did the
        // caller gets the envelope of a 500, not a panic.
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(error_envelope(&Error::from(ErrorCode::InternalError))),
        )
            .into_response(),
    }
}

/// Logs what the caller is not told: the cause of a 5xx, on a line that names the request
/// and its id (`telemetry::scope`).
fn log(error: &Error) {
    match error {
        Error::Unexpected(cause) => {
            tracing::error!(error = %format!("{cause:#}"), "request failed")
        }
        Error::Unavailable(cause) => {
            tracing::warn!(error = %format!("{cause:#}"), "storage unavailable")
        }
        _ => tracing::debug!(code = error.code().as_str(), "request refused"),
    }
}

fn retry_after(error: &Error, headers: &mut HeaderMap) {
    if let Error::RateLimited { retry_after_secs } = error {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
    }
}

/// The envelope of an error (SPEC §3): what the caller is told, and nothing more.
pub fn error_envelope(error: &Error) -> Envelope<serde_json::Value> {
    let code = error.code();
    let problems = match error {
        Error::Fields { problems, .. } => Some(problems.clone()),
        Error::ClientIpRequired => Some(vec![FieldProblem {
            field: "client_ip".into(),
            problem: "required: this partner has an IP allow-list".into(),
        }]),
        _ => None,
    };
    let message = match (error, &problems) {
        (Error::Code(_, Some(message)), _) => message.clone(),
        (_, Some(problems)) => {
            let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
            format!("{} ({})", code.message(), fields.join(", "))
        }
        // 5xx bodies are generic: no internals reach the caller.
        _ => code.message().to_owned(),
    };
    Envelope {
        success: false,
        message,
        data: error.data(),
        code: Some(code.as_str().to_owned()),
        errors: problems,
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        log(&self);
        let mut response = envelope(status_of(self.code()), &error_envelope(&self));
        retry_after(&self, response.headers_mut());
        // For the request metrics (`code` label).
        response.extensions_mut().insert(self.code());
        response
    }
}

/// An error on a link page: the same status, as HTML, with the request id to quote.
pub struct PageError {
    pub error: Error,
    pub request_id: String,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        log(&self.error);
        let code = self.error.code();
        let mut response = (
            status_of(code),
            super::views::error_page(code, &self.request_id),
        )
            .into_response();
        retry_after(&self.error, response.headers_mut());
        response.extensions_mut().insert(code);
        response
    }
}
