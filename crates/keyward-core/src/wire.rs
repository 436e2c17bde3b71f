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
    /// SPEC §3.5.
    pub const HEALTHZ: &str = "/healthz";
    pub const READYZ: &str = "/readyz";
    pub const OPENAPI: &str = "/openapi.json";

    /// On the internal listener only (SPEC §7.1, §3.5).
    pub const VERIFY: &str = "/internal/v1/verify";
    pub const METRICS: &str = "/metrics";
    pub const INTERNAL_OPENAPI: &str = "/internal/openapi.json";
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

/// Data of `WhoAmI`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WhoAmI {
    #[cfg_attr(feature = "openapi", schema(format = "uuid"))]
    pub partner_id: String,
    pub partner_code: String,
    #[cfg_attr(feature = "openapi", schema(format = "date-time"))]
    pub key_created_at: String,
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
    /// When the key stops working, if it is retiring; `null` otherwise.
    #[cfg_attr(feature = "openapi", schema(format = "date-time"))]
    pub key_expires_at: Option<String>,
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
        assert_eq!(format!("{}TOKEN", paths::LINK_PREFIX), "/link/TOKEN");
    }
}
