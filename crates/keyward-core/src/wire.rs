//! The wire contract shared by the server, the SDK, the CLI and the tests: the route paths,
//! the JSON envelope every route answers with (SPEC §3), and the bodies of its successes.

use serde::{Deserialize, Serialize};

/// Every route's path, written once. The published paths are part of the contract: never
/// change them.
pub mod paths {
    /// SPEC §3.1.
    pub const ONBOARD: &str = "/api/v1/no-auth/PartnerP2P/OnboardPartner";
    /// SPEC §3.2: the documented regeneration route.
    pub const REGENERATE: &str = "/api/v1/no-auth/PartnerP2P/GenKeysForPartner";
    /// The documented route and the aliases the published API uses. `OnboardPartner.` (with a
    /// trailing dot) is printed in the published page's header, so clients call it.
    pub const REGENERATE_ALL: [&str; 3] = [
        REGENERATE,
        "/api/v1/no-auth/PartnerP2P/ResetPartnerKeys",
        "/api/v1/no-auth/PartnerP2P/OnboardPartner.",
    ];
    /// SPEC §3.3, for programs.
    pub const REDEEM: &str = "/api/v1/no-auth/PartnerP2P/RedeemKeyLink";
    /// SPEC §3.3: the link page is `LINK_PREFIX` + the token.
    pub const LINK_PREFIX: &str = "/link/";
    /// The link page's route template.
    pub const LINK: &str = "/link/{token}";
    /// SPEC §3.4.
    pub const WHOAMI: &str = "/api/v1/PartnerP2P/WhoAmI";
    /// SPEC §3.2: ends the retiring pair's overlap now.
    pub const RETIRE_OLD_KEYS: &str = "/api/v1/PartnerP2P/RetireOldKeys";
    /// SPEC §3.4a.
    pub const SET_ALLOWED_IPS: &str = "/api/v1/PartnerP2P/SetAllowedIps";
    /// Restricted and test keys (SPEC §8.1).
    pub const CREATE_KEY: &str = "/api/v1/PartnerP2P/CreateKey";
    pub const LIST_KEYS: &str = "/api/v1/PartnerP2P/ListKeys";
    pub const REVOKE_KEY: &str = "/api/v1/PartnerP2P/RevokeKey";
    /// SPEC §3.4b: the server's clock, unauthenticated.
    pub const TIME: &str = "/api/v1/time";
    /// SPEC §3.5.
    pub const HEALTHZ: &str = "/healthz";
    pub const READYZ: &str = "/readyz";
    pub const OPENAPI: &str = "/openapi.json";
    /// SPEC §9.2: GitHub's secret scanning reports leaked tokens here (only with
    /// `KEYWARD_GITHUB_SECRET_SCANNING=on`).
    pub const GITHUB_SECRET_SCANNING: &str = "/api/v1/secret-scanning/github";
    /// The link pages' stylesheet and copy-button script.
    pub const STYLESHEET: &str = "/assets/keyward.css";
    pub const COPY_SCRIPT: &str = "/assets/copy.js";

    /// Every route of the public listener and its methods, as the router serves them with
    /// every optional route on. The tests hold the router and the OpenAPI document to this
    /// list (in both directions).
    pub const PUBLIC_ROUTES: &[(&str, &[&str])] = &[
        (ONBOARD, &["post"]),
        (REGENERATE_ALL[0], &["post"]),
        (REGENERATE_ALL[1], &["post"]),
        (REGENERATE_ALL[2], &["post"]),
        (REDEEM, &["post"]),
        (LINK, &["get", "post"]),
        (WHOAMI, &["post"]),
        (RETIRE_OLD_KEYS, &["post"]),
        (SET_ALLOWED_IPS, &["post"]),
        (CREATE_KEY, &["post"]),
        (LIST_KEYS, &["post"]),
        (REVOKE_KEY, &["post"]),
        (GITHUB_SECRET_SCANNING, &["post"]),
        (TIME, &["get"]),
        (HEALTHZ, &["get"]),
        (READYZ, &["get"]),
        (OPENAPI, &["get"]),
        (STYLESHEET, &["get"]),
        (COPY_SCRIPT, &["get"]),
    ];

    /// Routes of the public listener that are not API operations (absent from its OpenAPI
    /// document).
    pub const NOT_DOCUMENTED: &[&str] = &[OPENAPI, STYLESHEET, COPY_SCRIPT];

    /// On the internal listener only (SPEC §7.1, §3.5).
    pub const VERIFY: &str = "/internal/v1/verify";
    pub const METRICS: &str = "/metrics";
    pub const INTERNAL_OPENAPI: &str = "/internal/openapi.json";
}

/// The credential of an `Authorization` header value: `Bearer <credential>`, the scheme
/// case-insensitive (RFC 7235), surrounding spaces ignored; `None` for any other form.
pub fn bearer(value: &str) -> Option<&str> {
    value
        .trim()
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, credential)| credential.trim())
}

/// The largest body keyward reads from a partner (SPEC §3): larger ones get 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// `{"success": …, "message": …, "data": …}` plus, on errors, `code` and sometimes `errors`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Envelope<T> {
    pub success: bool,
    pub message: String,
    pub data: Option<T>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldProblem>>,
}

/// One bad field: `{"field": "email", "problem": "missing"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldProblem {
    pub field: String,
    pub problem: String,
}

/// Data of `RedeemKeyLink`: the credentials, shown once.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Credentials {
    #[cfg_attr(feature = "openapi", schema(format = "uuid"))]
    pub partner_id: String,
    pub partner_code: String,
    #[cfg_attr(
        feature = "openapi",
        schema(example = "pk_partner_BSB8wIYc6sE7hIysyRYv9Z0oCJif3k38fgkq")
    )]
    pub public_key: String,
    /// Shown once; store it safely.
    pub secret_key: String,
    /// After a regeneration with an overlap: until when the previous pair keeps working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(format = "date-time"))]
    pub old_keys_expire_at: Option<String>,
    /// For a key made by `CreateKey` (SPEC §8.1): what the new pair is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<KeyInfo>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("partner_id", &self.partner_id)
            .field("partner_code", &self.partner_code)
            .field("public_key", &self.public_key)
            .field("secret_key", &"[REDACTED]")
            .finish()
    }
}

/// One of a partner's key pairs as `ListKeys` shows it (SPEC §8.1): never a secret, never a
/// whole public key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyInfo {
    #[cfg_attr(feature = "openapi", schema(format = "uuid"))]
    pub key_id: String,
    /// `primary` (the pair of §3, full power) or `restricted`.
    pub kind: String,
    /// The name given at `CreateKey`; `null` for the primary pair.
    pub name: Option<String>,
    /// The public key's prefix and first four random characters.
    pub hint: String,
    /// What the pair may do (the primary pair holds every scope of the exchange).
    pub scopes: Vec<String>,
    /// `live` or `test`.
    pub mode: String,
    #[cfg_attr(feature = "openapi", schema(format = "date-time"))]
    pub created_at: String,
    /// When the pair stops working, if an expiry applies (overlap, policy or its own).
    #[cfg_attr(feature = "openapi", schema(format = "date-time"))]
    pub expires_at: Option<String>,
    /// Approximate (recorded every few seconds); `null`: never used.
    #[cfg_attr(feature = "openapi", schema(format = "date-time"))]
    pub last_used_at: Option<String>,
    /// `current` or `retiring` (a primary pair in its overlap).
    pub state: String,
    /// A key moved in from the exchange's previous system, not of §1's format (SPEC §10.2):
    /// it works until regenerated, or until the exchange's end date for such keys.
    #[serde(default)]
    pub legacy: bool,
}

/// Data of `ListKeys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyList {
    pub keys: Vec<KeyInfo>,
}

/// Data of `RevokeKey`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RevokedKeys {
    pub revoked: u64,
}

/// Data of `WhoAmI`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WhoAmI {
    #[cfg_attr(feature = "openapi", schema(format = "uuid"))]
    pub partner_id: String,
    pub partner_code: String,
    #[cfg_attr(feature = "openapi", schema(format = "date-time"))]
    pub key_created_at: String,
    /// When the key used for this request stops working, if an expiry applies (a retiring
    /// pair's overlap, the exchange's expiry policy, the key's own); `null` otherwise.
    #[cfg_attr(feature = "openapi", schema(format = "date-time"))]
    #[serde(default)]
    pub key_expires_at: Option<String>,
    /// The partner's IP allow-list; empty: any address.
    #[serde(default)]
    pub allowed_ips: Vec<String>,
    #[cfg_attr(feature = "openapi", schema(format = "uuid"))]
    #[serde(default)]
    pub key_id: String,
    /// `primary` or `restricted` (SPEC §8.1).
    #[serde(default)]
    pub kind: String,
    /// A restricted key's name; `null` for the primary pair.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// `live` or `test`.
    #[serde(default)]
    pub mode: String,
    /// `current`, or `retiring` for the old pair of a regeneration with an overlap (as in
    /// `ListKeys`).
    #[serde(default)]
    pub state: String,
}

/// Data of `SetAllowedIps`: the allow-list now in force, normalised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AllowedIpsData {
    pub allowed_ips: Vec<String>,
}

/// Data of `RetireOldKeys`: how many retiring pairs were revoked (0 or 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RetiredKeys {
    pub revoked: u64,
}

/// Data of `GET /api/v1/time`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServerTime {
    pub server_time_ms: i64,
    #[cfg_attr(feature = "openapi", schema(format = "date-time"))]
    pub server_time: String,
}

/// Data of `stale_request`: the server's clock, and how far the request's `timestamp` is from
/// it (positive: the client's clock is ahead).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StaleData {
    pub server_time_ms: i64,
    pub skew_ms: i64,
}

/// Data of `invalid_signature`: the SHA-256 of both messages the server computed the HMAC
/// over (SPEC §3.4b). No key material; never the expected signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InvalidSignatureData {
    pub message_sha256: MessageHashes,
}

/// Lower-case hex SHA-256 of each signed message form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessageHashes {
    pub as_sent: String,
    pub canonical: String,
}

/// The response header on every answer to a request made with a retiring key (SPEC §3.2).
pub const KEY_EXPIRES_HEADER: &str = "keyward-key-expires";

/// How every time is written on the wire and in the operators' output: RFC 3339 in UTC with
/// milliseconds (`2026-12-04T16:37:52.000Z`), from milliseconds since the Unix epoch. A time
/// outside chrono's range (never one keyward stores) is written as the epoch.
pub fn wire_time(ms: i64) -> String {
    use chrono::{Datelike, Timelike};
    let time = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
    let Ok(year @ 0..=9999) = u32::try_from(time.year()) else {
        // Signed or five-digit years, as chrono writes them.
        return time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    };
    // Written digit by digit: chrono's formatter goes through `core::fmt` for each field, a
    // cost paid on every answer that names a key's times.
    let mut out = String::with_capacity(24);
    let mut push = |value: u32, digits: u32, then: char| {
        for place in (0..digits).rev() {
            out.push(char::from(b'0' + (value / 10u32.pow(place) % 10) as u8));
        }
        out.push(then);
    };
    push(year, 4, '-');
    push(time.month(), 2, '-');
    push(time.day(), 2, 'T');
    push(time.hour(), 2, ':');
    push(time.minute(), 2, ':');
    push(time.second(), 2, '.');
    push(time.timestamp_subsec_millis(), 3, 'Z');
    out
}

/// The body of `POST /internal/v1/verify` (SPEC §7.1): the partner's request as the calling
/// service received it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VerifyRequest {
    /// The partner's `Authorization` header (`Bearer pk_partner_…`); absent or empty if it
    /// sent none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<String>,
    /// The partner's raw body, byte for byte, as a string.
    pub body: String,
    /// The partner's address; required when the partner has an IP allow-list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    /// Accept this signed request only once within the replay window, across nodes.
    #[serde(default)]
    pub single_use: bool,
    /// Scopes the key must hold (SPEC §8.2); without them: 403 `insufficient_scope`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_scopes: Vec<String>,
}

/// Data of a verify answer whose request is valid: who the partner is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VerifiedPartner {
    /// Always `true` here.
    pub valid: bool,
    #[cfg_attr(feature = "openapi", schema(format = "uuid"))]
    pub partner_id: String,
    pub partner_code: String,
    #[cfg_attr(feature = "openapi", schema(format = "uuid"))]
    pub key_id: String,
    #[cfg_attr(feature = "openapi", schema(format = "date-time"))]
    pub key_created_at: String,
    /// When the key stops working, if an expiry applies; `null` otherwise.
    #[cfg_attr(feature = "openapi", schema(format = "date-time"))]
    pub key_expires_at: Option<String>,
    /// `primary` or `restricted` (SPEC §8.1).
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// `live` or `test`: a test key must not move real money (SPEC §8.3).
    #[serde(default)]
    pub mode: String,
}

/// Data of `insufficient_scope`: what the route needs and what the key holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScopeData {
    pub required: Vec<String>,
    pub granted: Vec<String>,
}

/// Data of a verify answer whose request is not valid: what the partner must receive.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VerifyRejection {
    /// Always `false` here.
    pub valid: bool,
    pub error: RelayedError,
}

/// An error answer for the partner, to relay unchanged: its HTTP status and envelope.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RelayedError {
    pub status: u16,
    pub code: String,
    pub message: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub data: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldProblem>>,
}

impl RelayedError {
    /// The envelope the partner receives, with this error's status.
    pub fn envelope(&self) -> Envelope<serde_json::Value> {
        Envelope {
            success: false,
            message: self.message.clone(),
            data: self.data.clone(),
            code: Some(self.code.clone()),
            errors: self.errors.clone(),
        }
    }
}

/// The message of the onboarding success, fixed by the published API.
pub const ONBOARD_MESSAGE: &str = "API Keys generated. Please check your email to confirm";

#[cfg(test)]
mod tests {
    use super::paths;
    use proptest::prelude::*;

    fn chrono_wire_time(ms: i64) -> String {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }

    #[test]
    fn times_are_written_as_chrono_writes_them_at_the_edges() {
        assert_eq!(super::wire_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            super::wire_time(1_796_402_272_001),
            "2026-12-04T16:37:52.001Z"
        );
        for ms in [
            -1,
            -62_167_219_200_000, // 0000-01-01
            -62_167_219_200_001, // the last millisecond of year -1
            253_402_300_799_999, // 9999-12-31T23:59:59.999
            253_402_300_800_000, // 10000-01-01
            i64::MAX,            // outside chrono's range: the epoch
            i64::MIN,
        ] {
            assert_eq!(super::wire_time(ms), chrono_wire_time(ms), "{ms}");
        }
    }

    proptest! {
        #[test]
        fn times_are_written_as_chrono_writes_them(ms in -70_000_000_000_000i64..300_000_000_000_000) {
            prop_assert_eq!(super::wire_time(ms), chrono_wire_time(ms));
        }
    }

    /// The one place the published paths are spelled out again: SPEC §3 word for word.
    #[test]
    fn the_paths_are_the_published_ones() {
        assert_eq!(paths::ONBOARD, "/api/v1/no-auth/PartnerP2P/OnboardPartner");
        assert_eq!(
            paths::REGENERATE_ALL,
            [
                "/api/v1/no-auth/PartnerP2P/GenKeysForPartner",
                "/api/v1/no-auth/PartnerP2P/ResetPartnerKeys",
                "/api/v1/no-auth/PartnerP2P/OnboardPartner.",
            ]
        );
        assert_eq!(paths::REDEEM, "/api/v1/no-auth/PartnerP2P/RedeemKeyLink");
        assert_eq!(paths::WHOAMI, "/api/v1/PartnerP2P/WhoAmI");
        assert_eq!(paths::RETIRE_OLD_KEYS, "/api/v1/PartnerP2P/RetireOldKeys");
        assert_eq!(paths::SET_ALLOWED_IPS, "/api/v1/PartnerP2P/SetAllowedIps");
        assert_eq!(paths::CREATE_KEY, "/api/v1/PartnerP2P/CreateKey");
        assert_eq!(paths::LIST_KEYS, "/api/v1/PartnerP2P/ListKeys");
        assert_eq!(paths::REVOKE_KEY, "/api/v1/PartnerP2P/RevokeKey");
        assert_eq!(paths::TIME, "/api/v1/time");
        assert_eq!(format!("{}TOKEN", paths::LINK_PREFIX), "/link/TOKEN");
    }
}
