//! The JSON envelope every route answers with (SPEC §3), and the bodies of its successes.

use serde::{Deserialize, Serialize};

/// `{"success": …, "message": …, "data": …}` plus, on errors, `code` and sometimes `errors`.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
pub struct FieldProblem {
    pub field: String,
    pub problem: String,
}

/// Data of `RedeemKeyLink`: the credentials, shown once.
#[derive(Clone, Serialize, Deserialize)]
pub struct Credentials {
    pub partner_id: String,
    pub partner_code: String,
    pub public_key: String,
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
pub struct WhoAmI {
    pub partner_id: String,
    pub partner_code: String,
    pub key_created_at: String,
}

/// The message of the onboarding success, fixed by the published API.
pub const ONBOARD_MESSAGE: &str = "API Keys generated. Please check your email to confirm";
