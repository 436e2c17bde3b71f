//! Extractors: the JSON body (content type, 64 KiB limit, duplicate members, the envelope's
//! errors for each), the partner's `Authorization` header, the client's IP (X-Forwarded-For
//! only from trusted proxies), and field validation that reports every bad field at once.

use super::forwarded::{client_address, ForwardedHeader};
use crate::error::Error;
use crate::flows::Authorization;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use keyward_core::allow_list::unmapped as canonical;
use keyward_core::json::Value;
use keyward_core::signature::SignedBody;
use keyward_core::wire::FieldProblem;
use keyward_core::ErrorCode;
use std::net::{IpAddr, SocketAddr};

/// The largest body we read (SPEC §3).
pub const BODY_LIMIT: usize = keyward_core::wire::MAX_BODY_BYTES;

/// A JSON object body, parsed for signing: members in order, duplicates refused.
pub struct JsonBody {
    pub raw: Bytes,
    pub body: SignedBody,
}

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req.headers().get(header::CONTENT_TYPE).is_some_and(|v| {
            // The common case without parsing; parameters and other spellings through `mime`.
            v.as_bytes().eq_ignore_ascii_case(b"application/json")
                || v.to_str()
                    .ok()
                    .and_then(|v| v.parse::<mime::Mime>().ok())
                    .is_some_and(|m| m.essence_str() == "application/json")
        });
        if !is_json {
            return Err(ErrorCode::UnsupportedMediaType.into());
        }
        let raw = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Error::from(ErrorCode::BodyTooLarge)
            } else {
                Error::Code(
                    ErrorCode::InvalidJson,
                    Some("The body could not be read completely. Send it again.".into()),
                )
            }
        })?;
        let body = SignedBody::parse(&raw)?;
        Ok(Self { raw, body })
    }
}

/// Reads fields of a body, collecting every problem before answering.
pub struct Fields<'a> {
    body: &'a SignedBody,
    problems: Vec<FieldProblem>,
}

impl<'a> Fields<'a> {
    pub fn new(body: &'a SignedBody) -> Self {
        Self {
            body,
            problems: Vec::new(),
        }
    }

    /// A required string member, checked by `parse`; `describe` says what a valid one is.
    pub fn required<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&'a str) -> Option<T>,
        describe: &str,
    ) -> Option<T> {
        self.string(name, true, parse, describe)
    }

    /// An optional string member: absent or `null` is `None`; a string is checked by `parse`.
    pub fn optional<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&'a str) -> Option<T>,
        describe: &str,
    ) -> Option<T> {
        self.string(name, false, parse, describe)
    }

    fn string<T>(
        &mut self,
        name: &str,
        required: bool,
        parse: impl FnOnce(&'a str) -> Option<T>,
        describe: &str,
    ) -> Option<T> {
        let problem = match self.body.get(name) {
            None | Some(Value::Null) if !required => return None,
            None | Some(Value::Null) => "missing",
            Some(Value::String(s)) => match parse(s) {
                Some(value) => return Some(value),
                None => describe,
            },
            Some(_) => "must be a string",
        };
        self.problems.push(FieldProblem {
            field: name.to_owned(),
            problem: problem.to_owned(),
        });
        None
    }

    /// An optional boolean member: absent or `null` is `false`.
    pub fn flag(&mut self, name: &str) -> bool {
        match self.body.get(name) {
            None | Some(Value::Null) => false,
            Some(Value::Bool(value)) => *value,
            Some(_) => {
                self.problems.push(FieldProblem {
                    field: name.to_owned(),
                    problem: "must be true or false".to_owned(),
                });
                false
            }
        }
    }

    /// An optional whole number in `range`: absent or `null` is `None`.
    pub fn integer(
        &mut self,
        name: &str,
        range: std::ops::RangeInclusive<i64>,
        describe: &str,
    ) -> Option<i64> {
        match self.body.get(name) {
            None | Some(Value::Null) => None,
            #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
            Some(Value::Number(n)) if n.fract() == 0.0 && range.contains(&(*n as i64)) => {
                Some(*n as i64)
            }
            Some(_) => {
                self.problem(name, describe);
                None
            }
        }
    }

    /// A required array of strings, each checked by `parse` (every bad entry is listed as
    /// `name[i]`), of at most `max` entries.
    pub fn string_list<T>(
        &mut self,
        name: &str,
        max: usize,
        parse: impl Fn(&str) -> Option<T>,
        describe: &str,
    ) -> Option<Vec<T>> {
        let items = match self.body.get(name) {
            None | Some(Value::Null) => {
                self.problem(name, "missing");
                return None;
            }
            Some(Value::Array(items)) => items,
            Some(_) => {
                self.problem(name, "must be an array of strings");
                return None;
            }
        };
        if items.len() > max {
            self.problem(name, &format!("at most {max} entries"));
            return None;
        }
        let before = self.problems.len();
        let mut values = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item {
                Value::String(s) => match parse(s) {
                    Some(value) => values.push(value),
                    None => self.problem(&format!("{name}[{i}]"), describe),
                },
                _ => self.problem(&format!("{name}[{i}]"), "must be a string"),
            }
        }
        (self.problems.len() == before).then_some(values)
    }

    fn problem(&mut self, field: &str, problem: &str) {
        self.problems.push(FieldProblem {
            field: field.to_owned(),
            problem: problem.to_owned(),
        });
    }

    /// The top-level `signature` must be present (its type was checked when parsing).
    pub fn require_signature(&mut self) {
        if self.body.signature.is_none() {
            self.problems.push(FieldProblem {
                field: "signature".into(),
                problem: "missing".into(),
            });
        }
    }

    /// Every field's value once all are valid: `fields.finish_with(code.zip(email))`.
    pub fn finish_with<T>(self, values: Option<T>) -> Result<T, Error> {
        self.finish()?;
        values
            .ok_or_else(|| Error::Unexpected(anyhow::anyhow!("a field was valid but has no value")))
    }

    /// `missing_fields` if anything is missing, else `invalid_field`, listing every problem.
    pub fn finish(self) -> Result<(), Error> {
        if self.problems.is_empty() {
            return Ok(());
        }
        let code = if self.problems.iter().any(|p| p.problem == "missing") {
            ErrorCode::MissingFields
        } else {
            ErrorCode::InvalidField
        };
        Err(Error::Fields {
            code,
            problems: self.problems,
        })
    }
}

/// The partner's `Authorization` header (as realworld's `MaybeAuthUser`). Never rejects:
/// whether a missing header is an error depends on the route (the lost-keys path has none),
/// and body errors are reported first.
impl<S: Send + Sync> FromRequestParts<S> for Authorization {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let mut values = parts.headers.get_all(header::AUTHORIZATION).iter();
        Ok(match (values.next(), values.next()) {
            (None, _) => Authorization::Absent,
            // Two headers: which one counts is exactly what an attacker would like to choose.
            (Some(_), Some(_)) => Authorization::Malformed,
            (Some(value), None) => Authorization::from_value(value.as_bytes()),
        })
    }
}

/// The client's address: the TCP peer, or, when the peer is a trusted proxy, what the
/// proxies report (see `forwarded.rs`).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl<S> FromRequestParts<S> for ClientIp
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| canonical(addr.ip()))
            .ok_or_else(|| {
                Error::Unexpected(anyhow::anyhow!("no peer address on the connection"))
            })?;
        let settings = &state.settings;
        let header = match settings.forwarded_header {
            ForwardedHeader::XForwardedFor => "x-forwarded-for",
            ForwardedHeader::Forwarded => "forwarded",
        };
        let values = parts
            .headers
            .get_all(header)
            .iter()
            // A value that is not text is unreadable: it ends the walk at the last trusted hop.
            .map(|v| v.to_str().unwrap_or("unknown"));
        let client = client_address(
            peer,
            &settings.trusted_proxies,
            settings.forwarded_header,
            values,
        );
        Ok(ClientIp(client))
    }
}

/// The request id set by the request-id layer, to quote on error pages.
pub struct RequestId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let id = parts
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        Ok(RequestId(id.to_owned()))
    }
}
