//! The service's error: every variant names its spec code; `http/error.rs` turns it into the
//! JSON envelope (or an HTML page) in one place.

use crate::store::StoreError;
use keyward_core::wire::{FieldProblem, MessageHashes, ScopeData, StaleData};
use keyward_core::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A spec error with its standard message, or a more specific one.
    #[error("{0}")]
    Code(ErrorCode, Option<String>),
    /// 400 `missing_fields` or `invalid_field`, with every bad field listed.
    #[error("{code}: {problems:?}")]
    Fields {
        code: ErrorCode,
        problems: Vec<FieldProblem>,
    },
    /// 401 `invalid_signature`, with the SHA-256 of both messages the server signed, so the
    /// partner can find which byte of its string-to-sign differs (SPEC §3.4b).
    #[error("invalid_signature")]
    InvalidSignature(MessageHashes),
    /// 401 `stale_request`, with the server's clock and the request's distance from it.
    #[error("stale_request: skew {} ms", .0.skew_ms)]
    StaleRequest(StaleData),
    /// 403 `insufficient_scope` with what the route needs and what the key holds (SPEC §8.2).
    #[error("insufficient_scope: requires {:?}", .0.required)]
    InsufficientScope(ScopeData),
    /// 400 `missing_fields` (`client_ip`): the verify API's caller did not say where the
    /// partner's request came from, and the partner has an IP allow-list.
    #[error("client_ip is required: the partner has an IP allow-list")]
    ClientIpRequired,
    /// 429 `rate_limited` with `Retry-After`.
    #[error("rate limited for {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// 503 `unavailable`: the database cannot be reached.
    #[error("unavailable: {0:#}")]
    Unavailable(anyhow::Error),
    /// 500 `internal_error`: the cause is logged with the request id, never sent.
    #[error("unexpected: {0:#}")]
    Unexpected(anyhow::Error),
}

impl Error {
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Code(code, _) => *code,
            Error::Fields { code, .. } => *code,
            Error::InvalidSignature(_) => ErrorCode::InvalidSignature,
            Error::StaleRequest(_) => ErrorCode::StaleRequest,
            Error::InsufficientScope(_) => ErrorCode::InsufficientScope,
            Error::ClientIpRequired => ErrorCode::MissingFields,
            Error::RateLimited { .. } => ErrorCode::RateLimited,
            Error::Unavailable(_) => ErrorCode::Unavailable,
            Error::Unexpected(_) => ErrorCode::InternalError,
        }
    }

    /// A copy of an error shared between coalesced callers (the key cache's loads): the
    /// cause's text is kept for the log, the variant for the answer.
    pub fn shared(error: &Error) -> Self {
        match error {
            Error::Code(code, message) => Error::Code(*code, message.clone()),
            Error::Fields { code, problems } => Error::Fields {
                code: *code,
                problems: problems.clone(),
            },
            Error::InvalidSignature(hashes) => Error::InvalidSignature(hashes.clone()),
            Error::StaleRequest(data) => Error::StaleRequest(data.clone()),
            Error::InsufficientScope(data) => Error::InsufficientScope(data.clone()),
            Error::ClientIpRequired => Error::ClientIpRequired,
            Error::RateLimited { retry_after_secs } => Error::RateLimited {
                retry_after_secs: *retry_after_secs,
            },
            Error::Unavailable(cause) => Error::Unavailable(anyhow::anyhow!("{cause:#}")),
            Error::Unexpected(cause) => Error::Unexpected(anyhow::anyhow!("{cause:#}")),
        }
    }

    /// The error's `data` member, for the codes that carry one (SPEC §3.4b).
    pub fn data(&self) -> Option<serde_json::Value> {
        let data = match self {
            Error::InvalidSignature(hashes) => {
                serde_json::to_value(keyward_core::wire::InvalidSignatureData {
                    message_sha256: hashes.clone(),
                })
            }
            Error::StaleRequest(data) => serde_json::to_value(data),
            Error::InsufficientScope(data) => serde_json::to_value(data),
            _ => return None,
        };
        data.ok()
    }

    /// One field problem.
    pub fn field(field: &str, problem: &str) -> Self {
        let code = if problem == "missing" {
            ErrorCode::MissingFields
        } else {
            ErrorCode::InvalidField
        };
        Error::Fields {
            code,
            problems: vec![FieldProblem {
                field: field.into(),
                problem: problem.into(),
            }],
        }
    }
}

impl From<ErrorCode> for Error {
    fn from(code: ErrorCode) -> Self {
        Error::Code(code, None)
    }
}

impl From<keyward_core::signature::BodyError> for Error {
    /// The body errors of SPEC §2, in the envelope's terms.
    fn from(e: keyward_core::signature::BodyError) -> Self {
        use keyward_core::json::ParseError;
        use keyward_core::signature::BodyError;
        match e {
            BodyError::Parse(ParseError::InvalidJson) => ErrorCode::InvalidJson.into(),
            BodyError::Parse(ParseError::NotAnObject) => ErrorCode::NotAnObject.into(),
            BodyError::Parse(ParseError::DuplicateMember) => ErrorCode::DuplicateMember.into(),
            BodyError::MissingSignature => Error::field("signature", "missing"),
            BodyError::SignatureNotAString => Error::field("signature", "must be a string"),
        }
    }
}

impl From<crate::crypto::EncryptError> for Error {
    fn from(e: crate::crypto::EncryptError) -> Self {
        Error::Unexpected(e.into())
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => Error::Unavailable(e.into()),
            other => Error::Unexpected(other.into()),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error and its causes on one line (`client error (Connect): tcp connect error: Connection
/// refused`), for the log: the outbound clients' errors say little without their sources.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}
