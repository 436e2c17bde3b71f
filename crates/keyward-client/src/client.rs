//! A typed async client for every route of the spec.

use keyward_core::signature::{sign_body, MessageForm};
use keyward_core::wire::paths::{ONBOARD, REDEEM, REGENERATE, WHOAMI};
use keyward_core::wire::{Credentials, Envelope, FieldProblem, WhoAmI};
use keyward_core::{ErrorCode, PublicKey, SecretKey};
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error envelope.
    #[error("{code}: {message}")]
    Api {
        status: u16,
        code: ErrorCode,
        message: String,
        /// The bad fields, for `missing_fields` and `invalid_field`.
        errors: Vec<FieldProblem>,
    },
    /// The server could not be reached, or the connection broke.
    #[error("could not reach the server: {0}")]
    Transport(#[from] reqwest::Error),
    /// A URL, key or answer that is not what it should be.
    #[error("{0}")]
    Invalid(String),
}

impl ClientError {
    /// The spec's code, for API errors.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// What to do next, in words (the spec's guidance for the code).
    pub fn advice(&self) -> &'static str {
        match self {
            ClientError::Api { code, .. } => code.message(),
            ClientError::Transport(_) => "Check the server URL and that the server is running.",
            ClientError::Invalid(_) => "Check the value named above.",
        }
    }
}

/// Calls the routes that need no keys: onboarding, lost keys, link redemption.
#[derive(Debug, Clone)]
pub struct Client {
    base: url::Url,
    http: reqwest::Client,
}

/// Calls the signed routes with a partner's key pair.
#[derive(Clone)]
pub struct PartnerClient {
    client: Client,
    public: PublicKey,
    secret: SecretKey,
    form: MessageForm,
}

impl std::fmt::Debug for PartnerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartnerClient")
            .field("base", &self.client.base.as_str())
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client of the server at `base_url` (`http://127.0.0.1:8080`).
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        let base = url::Url::parse(base_url.trim_end_matches('/')).map_err(|e| {
            ClientError::Invalid(format!("the server URL {base_url:?} is not valid: {e}"))
        })?;
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .user_agent(concat!("keyward-client/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { base, http })
    }

    pub fn base_url(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// The same server, signing with this key pair.
    pub fn with_credentials(
        &self,
        public_key: &str,
        secret_key: &str,
    ) -> Result<PartnerClient, ClientError> {
        let public = PublicKey::parse(public_key)
            .map_err(|e| ClientError::Invalid(format!("public key: {e}")))?;
        let secret = SecretKey::parse(secret_key)
            .map_err(|e| ClientError::Invalid(format!("secret key: {e}")))?;
        Ok(PartnerClient {
            client: self.clone(),
            public,
            secret,
            form: MessageForm::AsSent,
        })
    }

    /// `OnboardPartner`: creates the partner; the onboarding link is emailed.
    pub async fn onboard(&self, partner_code: &str, email: &str) -> Result<String, ClientError> {
        let body = json!({"partner_code": partner_code, "email": email}).to_string();
        self.post::<Value>(ONBOARD, body, None)
            .await
            .map(|(message, _)| message)
    }

    /// `GenKeysForPartner` without keys (lost keys): the server answers the same whether or
    /// not the pair matches; a link is emailed only if it does.
    pub async fn request_new_keys(
        &self,
        partner_code: &str,
        email: &str,
    ) -> Result<String, ClientError> {
        let body = json!({"partner_code": partner_code, "email": email}).to_string();
        self.post::<Value>(REGENERATE, body, None)
            .await
            .map(|(message, _)| message)
    }

    /// `RedeemKeyLink` from the emailed link (`…/link/<token>`) or the bare token. Uses the
    /// link: the credentials are returned once.
    pub async fn redeem_link(
        &self,
        link_or_token: &str,
        partner_code: &str,
    ) -> Result<Credentials, ClientError> {
        let token = link_or_token
            .trim()
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default();
        let body = json!({"token": token, "partner_code": partner_code}).to_string();
        let (_, data) = self.post::<Credentials>(REDEEM, body, None).await?;
        data.ok_or_else(|| ClientError::Invalid("the server answered without credentials".into()))
    }

    pub(crate) async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: String,
        authorization: Option<String>,
    ) -> Result<(String, Option<T>), ClientError> {
        let url = format!("{}{path}", self.base_url());
        let mut request = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .body(body);
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let envelope: Envelope<T> = serde_json::from_str(&text).map_err(|_| {
            ClientError::Invalid(format!(
                "the server answered {status} with something that is not keyward's JSON envelope"
            ))
        })?;
        if envelope.success {
            return Ok((envelope.message, envelope.data));
        }
        let code = envelope
            .code
            .as_deref()
            .and_then(ErrorCode::from_code)
            .unwrap_or(ErrorCode::InternalError);
        Err(ClientError::Api {
            status,
            code,
            message: envelope.message,
            errors: envelope.errors.unwrap_or_default(),
        })
    }
}

impl PartnerClient {
    /// Sign in RFC 8785 form instead of as sent (the server accepts both).
    pub fn canonical(mut self) -> Self {
        self.form = MessageForm::Canonical;
        self
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// Sends `body` (a JSON object) to a signed route, with a fresh `timestamp`.
    async fn signed<T: DeserializeOwned>(
        &self,
        path: &str,
        mut body: Value,
    ) -> Result<(String, Option<T>), ClientError> {
        if let Some(members) = body.as_object_mut() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0);
            members
                .entry("timestamp")
                .or_insert(json!(u64::try_from(now).unwrap_or(u64::MAX)));
        }
        let signed = sign_body(body.to_string().as_bytes(), &self.secret, self.form)
            .map_err(|e| ClientError::Invalid(format!("the body cannot be signed: {e}")))?;
        self.client
            .post(path, signed, Some(format!("Bearer {}", self.public)))
            .await
    }

    /// `WhoAmI`: checks that requests are signed correctly.
    pub async fn whoami(&self) -> Result<WhoAmI, ClientError> {
        let (_, data) = self.signed::<WhoAmI>(WHOAMI, json!({})).await?;
        data.ok_or_else(|| ClientError::Invalid("the server answered without data".into()))
    }

    /// `GenKeysForPartner`, signed: a regeneration link is emailed to the registered address.
    /// The current keys keep working until it is used.
    pub async fn regenerate(&self, partner_code: &str, email: &str) -> Result<String, ClientError> {
        let body = json!({"email": email, "partner_code": partner_code});
        self.signed::<Value>(REGENERATE, body)
            .await
            .map(|(message, _)| message)
    }

    /// The secret key, for saving (it is never printed by `Debug`).
    pub fn secret_key(&self) -> &str {
        self.secret.expose_secret()
    }
}
