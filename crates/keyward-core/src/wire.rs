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
    pub const METRICS: &str = "/metrics";
}

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
