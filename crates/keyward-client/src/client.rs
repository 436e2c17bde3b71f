//! A typed async client for every route of the spec.

use keyward_core::keys::KeyFormatError;
use keyward_core::signature::{sign_body, MessageForm};
use keyward_core::wire::paths::{
    CREATE_KEY, LIST_KEYS, ONBOARD, REDEEM, REGENERATE, RETIRE_OLD_KEYS, REVOKE_KEY,
    SET_ALLOWED_IPS, TIME, WHOAMI,
};
use keyward_core::wire::{
    AllowedIpsData, Credentials, Envelope, FieldProblem, KeyInfo, KeyList, RetiredKeys,
    RevokedKeys, ServerTime, WhoAmI,
};
use keyward_core::{ErrorCode, KeyMode, PublicKey, SecretKey};
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
        /// What the server gave to debug with: for `invalid_signature`, the SHA-256 of both
        /// messages it signed (`message_sha256`); for `stale_request`, its clock and the skew.
        data: Option<Value>,
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
    clock: Arc<ClockOffset>,
}

/// The server's clock minus ours, in ms, once measured (opt-in: see
/// [`PartnerClient::correct_clock`]).
#[derive(Debug, Default)]
struct ClockOffset {
    enabled: AtomicBool,
    measured: AtomicBool,
    offset_ms: AtomicI64,
}

fn local_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
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
        self.signing_with(PublicKey::parse(public_key), SecretKey::parse(secret_key))
    }

    /// The same server, signing with a pair moved in from the exchange's previous system
    /// (SPEC §10.2): keys of §1's format, or `pk_partner_`/`sk_partner_` + 8–128 letters and
    /// digits. Without a checksum, a mistyped key is caught by the server, not here: use
    /// [`with_credentials`](Self::with_credentials) for keys keyward issued.
    pub fn with_legacy_credentials(
        &self,
        public_key: &str,
        secret_key: &str,
    ) -> Result<PartnerClient, ClientError> {
        self.signing_with(
            PublicKey::parse_or_legacy(public_key),
            SecretKey::parse_or_legacy(secret_key),
        )
    }

    fn signing_with(
        &self,
        public: Result<PublicKey, KeyFormatError>,
        secret: Result<SecretKey, KeyFormatError>,
    ) -> Result<PartnerClient, ClientError> {
        Ok(PartnerClient {
            client: self.clone(),
            public: public.map_err(|e| ClientError::Invalid(format!("public key: {e}")))?,
            secret: secret.map_err(|e| ClientError::Invalid(format!("secret key: {e}")))?,
            form: MessageForm::AsSent,
            clock: Arc::default(),
        })
    }

    /// `GET /api/v1/time`: the server's clock.
    pub async fn server_time(&self) -> Result<ServerTime, ClientError> {
        Ok(self.measure_clock().await?.0)
    }

    /// The server's time and its offset from ours (ms, positive: the server is ahead), taken
    /// at the midpoint of the round trip. Falls back to the `Date` header (second
    /// resolution) when the answer is not keyward's (a proxy in front that hides the route).
    async fn measure_clock(&self) -> Result<(ServerTime, i64), ClientError> {
        let sent = local_millis();
        let response = self
            .http
            .get(format!("{}{TIME}", self.base_url()))
            .send()
            .await?;
        let received = local_millis();
        let midpoint = sent + (received - sent) / 2;
        let date = response
            .headers()
            .get("date")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok());
        let text = response.text().await?;
        let from_body = serde_json::from_str::<Envelope<ServerTime>>(&text)
            .ok()
            .and_then(|e| e.data);
        let time = match (from_body, date) {
            (Some(time), _) => time,
            (None, Some(date)) => {
                let ms = date
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0));
                ServerTime {
                    server_time_ms: ms,
                    server_time: String::new(),
                }
            }
            (None, None) => {
                return Err(ClientError::Invalid(
                    "the server told neither its time nor a Date header".into(),
                ))
            }
        };
        let offset = time.server_time_ms - midpoint;
        Ok((time, offset))
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
        let not_ours = || {
            ClientError::Invalid(format!(
                "the server answered {status} with something that is not keyward's JSON envelope"
            ))
        };
        let envelope: Envelope<Value> = serde_json::from_str(&text).map_err(|_| not_ours())?;
        if envelope.success {
            let data = match envelope.data {
                None | Some(Value::Null) => None,
                Some(data) => Some(serde_json::from_value(data).map_err(|_| not_ours())?),
            };
            return Ok((envelope.message, data));
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
            data: envelope.data.and_then(|d| serde_json::to_value(d).ok()),
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

    /// Corrects the `timestamp` of signed requests by the server's clock (SPEC §3.4b): the
    /// offset is measured from `GET /api/v1/time` before the first request, and again (with
    /// one retry) when a request is refused as `stale_request`. For machines whose clock
    /// cannot be fixed; a clock kept by NTP does not need it.
    pub fn correct_clock(self) -> Self {
        self.clock.enabled.store(true, Ordering::Relaxed);
        self
    }

    /// Measures the server's clock now; returns the offset (ms, positive: the server is
    /// ahead of this machine). Used for `timestamp` once [`PartnerClient::correct_clock`]
    /// is on.
    pub async fn sync_clock(&self) -> Result<i64, ClientError> {
        let (_, offset) = self.client.measure_clock().await?;
        self.clock.offset_ms.store(offset, Ordering::Relaxed);
        self.clock.measured.store(true, Ordering::Relaxed);
        Ok(offset)
    }

    /// The time to put in `timestamp`: ours, corrected by the server's offset when asked.
    async fn timestamp(&self) -> Result<i64, ClientError> {
        if !self.clock.enabled.load(Ordering::Relaxed) {
            return Ok(local_millis());
        }
        if !self.clock.measured.load(Ordering::Relaxed) {
            self.sync_clock().await?;
        }
        Ok(local_millis() + self.clock.offset_ms.load(Ordering::Relaxed))
    }

    /// Sends `body` (a JSON object) to a signed route, with a fresh `timestamp`. With clock
    /// correction on, a `stale_request` refusal (nothing was done) re-measures the offset from
    /// its `server_time_ms` and is retried once.
    async fn signed<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Value,
    ) -> Result<(String, Option<T>), ClientError> {
        let sent_at = local_millis();
        match self.send_signed(path, body.clone()).await {
            Err(ClientError::Api {
                code: ErrorCode::StaleRequest,
                data: Some(data),
                ..
            }) if self.clock.enabled.load(Ordering::Relaxed) && data["server_time_ms"].is_i64() => {
                let server = data["server_time_ms"].as_i64().unwrap_or_default();
                let midpoint = sent_at + (local_millis() - sent_at) / 2;
                self.clock
                    .offset_ms
                    .store(server - midpoint, Ordering::Relaxed);
                self.clock.measured.store(true, Ordering::Relaxed);
                self.send_signed(path, body).await
            }
            other => other,
        }
    }

    async fn send_signed<T: DeserializeOwned>(
        &self,
        path: &str,
        mut body: Value,
    ) -> Result<(String, Option<T>), ClientError> {
        if let Some(members) = body.as_object_mut() {
            if !members.contains_key("timestamp") {
                members.insert("timestamp".into(), json!(self.timestamp().await?));
            }
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
        self.regenerate_with_overlap(partner_code, email, Duration::ZERO)
            .await
    }

    /// `GenKeysForPartner` with `overlap_seconds`: once the link is used, the current pair
    /// keeps working for `overlap` (at most 7 days) so that every system can switch without
    /// an outage; answers made with it then carry `Keyward-Key-Expires`.
    pub async fn regenerate_with_overlap(
        &self,
        partner_code: &str,
        email: &str,
        overlap: Duration,
    ) -> Result<String, ClientError> {
        let mut body = json!({"email": email, "partner_code": partner_code});
        if !overlap.is_zero() {
            body["overlap_seconds"] = json!(overlap.as_secs());
        }
        self.signed::<Value>(REGENERATE, body)
            .await
            .map(|(message, _)| message)
    }

    /// `RetireOldKeys` (signed with the current pair): the retiring pair stops working now.
    /// Returns how many pairs were revoked (0 or 1).
    pub async fn retire_old_keys(&self) -> Result<u64, ClientError> {
        let (_, data) = self
            .signed::<RetiredKeys>(RETIRE_OLD_KEYS, json!({}))
            .await?;
        data.map(|d| d.revoked)
            .ok_or_else(|| ClientError::Invalid("the server answered without data".into()))
    }

    /// `SetAllowedIps`: requests are accepted only from these addresses or CIDR blocks (none:
    /// from any). Refused with `would_lock_out` if the list leaves out this machine's address,
    /// unless `confirm_lock_out`. Returns the list as the server normalised it.
    pub async fn set_allowed_ips(
        &self,
        allowed_ips: &[&str],
        confirm_lock_out: bool,
    ) -> Result<Vec<String>, ClientError> {
        let mut body = json!({"allowed_ips": allowed_ips});
        if confirm_lock_out {
            body["confirm_lock_out"] = json!(true);
        }
        let (_, data) = self.signed::<AllowedIpsData>(SET_ALLOWED_IPS, body).await?;
        data.map(|d| d.allowed_ips)
            .ok_or_else(|| ClientError::Invalid("the server answered without data".into()))
    }

    /// `CreateKey` (signed with the primary pair): a one-time link to a new restricted pair is
    /// emailed to the registered address (SPEC §8.1). `scopes`: empty when the exchange has
    /// none; `expires_in_days`: 1 to 366, or none.
    pub async fn create_key(
        &self,
        name: &str,
        scopes: &[&str],
        mode: KeyMode,
        expires_in_days: Option<u16>,
    ) -> Result<String, ClientError> {
        let mut body = json!({"name": name, "mode": mode.as_str()});
        if !scopes.is_empty() {
            body["scopes"] = json!(scopes);
        }
        if let Some(days) = expires_in_days {
            body["expires_in_days"] = json!(days);
        }
        self.signed::<Value>(CREATE_KEY, body)
            .await
            .map(|(message, _)| message)
    }

    /// `ListKeys` (signed with the primary pair): every pair that works, with its kind, name,
    /// scopes, mode and expiry; never a secret.
    pub async fn list_keys(&self) -> Result<Vec<KeyInfo>, ClientError> {
        let (_, data) = self.signed::<KeyList>(LIST_KEYS, json!({})).await?;
        data.map(|d| d.keys)
            .ok_or_else(|| ClientError::Invalid("the server answered without data".into()))
    }

    /// `RevokeKey` (signed with the primary pair): the restricted pair `key_id` stops working
    /// on every node by the time this returns. Returns 1, or 0 if it was revoked already.
    pub async fn revoke_key(&self, key_id: &str) -> Result<u64, ClientError> {
        let (_, data) = self
            .signed::<RevokedKeys>(REVOKE_KEY, json!({"key_id": key_id}))
            .await?;
        data.map(|d| d.revoked)
            .ok_or_else(|| ClientError::Invalid("the server answered without data".into()))
    }

    /// The secret key, for saving (it is never printed by `Debug`).
    pub fn secret_key(&self) -> &str {
        self.secret.expose_secret()
    }
}
