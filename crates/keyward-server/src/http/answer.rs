//! What several handlers put on their answers.

use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;
use keyward_core::wire::{wire_time, KEY_EXPIRES_HEADER};

/// Adds `Keyward-Key-Expires` to the answer (success or error) of a request authenticated
/// with a retiring key (SPEC §3.2), so partners see in their own logs which systems still
/// use the old pair.
pub fn with_key_expiry(mut response: Response, key_expires_at: Option<i64>) -> Response {
    if let Some(expires_at) = key_expires_at {
        if let Ok(value) = HeaderValue::from_str(&wire_time(expires_at)) {
            response
                .headers_mut()
                .insert(HeaderName::from_static(KEY_EXPIRES_HEADER), value);
        }
    }
    response
}
