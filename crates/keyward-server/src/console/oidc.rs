//! The console's login (SPEC §10.1): OpenID Connect's authorization-code flow with PKCE,
//! `state` and `nonce`, through the `openidconnect` crate. The provider is discovered from its
//! issuer (the discovery document and its JWKS, kept for a few minutes); the ID token's
//! signature, `iss`, `aud`, `exp` and `nonce` are checked by the crate; the role comes from
//! the configured claim of that verified token.

use crate::config::ConsoleSettings;
use base64::Engine as _;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreErrorResponseType, CoreProviderMetadata,
};
use openidconnect::{
    AuthType, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RequestTokenError,
    Scope, TokenResponse,
};
use secrecy::ExposeSecret;
use std::time::{Duration, Instant};

/// How long the provider's discovery document and keys are kept before they are read again.
const DISCOVERY_TTL: Duration = Duration::from_secs(300);

/// What a person may do in the console, from least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Sees.
    Viewer,
    /// Also acts on partners.
    Operator,
    /// Also manages service tokens and webhooks.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// The highest role any of `groups` gives; `None`: the person may not use the console.
    pub fn of(groups: &[String], settings: &ConsoleSettings) -> Option<Self> {
        let [admins, operators, viewers] = &settings.groups;
        let member = |of: &Vec<String>| groups.iter().any(|g| of.contains(g));
        if member(admins) {
            Some(Role::Admin)
        } else if member(operators) {
            Some(Role::Operator)
        } else if member(viewers) {
            Some(Role::Viewer)
        } else {
            None
        }
    }
}

/// Who signed in, as the verified ID token says.
#[derive(Debug, Clone)]
pub struct Identity {
    pub email: String,
    pub groups: Vec<String>,
}

/// A login begun: where to send the browser, and what its answer will be checked with.
pub struct Begun {
    pub url: url::Url,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

/// Why a login failed, for the log; the person sees a page that says to try again.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("the identity provider could not be reached or read: {0}")]
    Provider(String),
    #[error("the ID token was refused: {0}")]
    Token(String),
    #[error("the ID token names no email address (ask for the `email` scope and claim)")]
    NoEmail,
}

pub struct Oidc {
    settings: ConsoleSettings,
    http: openidconnect::reqwest::Client,
    discovered: tokio::sync::Mutex<Option<(Instant, CoreProviderMetadata)>>,
}

impl Oidc {
    pub fn new(settings: ConsoleSettings) -> anyhow::Result<Self> {
        let http = openidconnect::reqwest::ClientBuilder::new()
            // Following redirects would let the provider's answers point anywhere (SSRF).
            .redirect(openidconnect::reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self {
            settings,
            http,
            discovered: tokio::sync::Mutex::new(None),
        })
    }

    pub fn settings(&self) -> &ConsoleSettings {
        &self.settings
    }

    async fn metadata(&self, fresh: bool) -> Result<CoreProviderMetadata, LoginError> {
        let mut discovered = self.discovered.lock().await;
        if let Some((at, metadata)) = discovered.as_ref() {
            if !fresh && at.elapsed() < DISCOVERY_TTL {
                return Ok(metadata.clone());
            }
        }
        // Discovery compares the issuer character for character. As configured first; then
        // with its trailing slash the other way, the one difference people do not see.
        let configured = self.settings.issuer.clone();
        let other = match configured.strip_suffix('/') {
            Some(without) => without.to_owned(),
            None => format!("{configured}/"),
        };
        let mut first_error = None;
        for issuer in [configured, other] {
            let issuer = IssuerUrl::new(issuer).map_err(|e| LoginError::Provider(e.to_string()))?;
            match CoreProviderMetadata::discover_async(issuer, &self.http).await {
                Ok(metadata) => {
                    *discovered = Some((Instant::now(), metadata.clone()));
                    return Ok(metadata);
                }
                Err(e) => {
                    first_error.get_or_insert_with(|| crate::error::chain(&e));
                }
            }
        }
        Err(LoginError::Provider(first_error.unwrap_or_default()))
    }

    fn redirect_uri(&self) -> String {
        format!(
            "{}/console/callback",
            self.settings.url.as_str().trim_end_matches('/')
        )
    }

    fn client(
        &self,
        metadata: CoreProviderMetadata,
    ) -> Result<
        CoreClient<
            openidconnect::EndpointSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointMaybeSet,
            openidconnect::EndpointMaybeSet,
        >,
        LoginError,
    > {
        Ok(CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(self.settings.client_id.clone()),
            Some(ClientSecret::new(
                self.settings.client_secret.expose_secret().to_owned(),
            )),
        )
        .set_redirect_uri(
            RedirectUrl::new(self.redirect_uri())
                .map_err(|e| LoginError::Provider(e.to_string()))?,
        ))
    }

    /// The provider's authorization URL for a new login, with a fresh state, nonce and PKCE
    /// challenge (S256).
    pub async fn begin(&self) -> Result<Begun, LoginError> {
        let client = self.client(self.metadata(false).await?)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("email".to_owned()))
            .add_scope(Scope::new("profile".to_owned()))
            .set_pkce_challenge(challenge)
            .url();
        Ok(Begun {
            url,
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
        })
    }

    /// Exchanges the code (with the PKCE verifier) and checks the ID token: signature by the
    /// provider's published keys, issuer, audience, expiry and nonce. A token signed by a key
    /// the kept JWKS does not have is checked once more after a fresh discovery (the provider
    /// rotated its keys). The email and the roles come from the verified ID token; a provider
    /// that puts them in its userinfo answer only (oidc-provider's default for the code flow)
    /// is asked there, for the same subject.
    pub async fn finish(
        &self,
        code: String,
        nonce: &str,
        pkce_verifier: String,
    ) -> Result<Identity, LoginError> {
        let metadata = self.metadata(false).await?;
        let userinfo = metadata.userinfo_endpoint().cloned();
        let client = self.client(metadata)?;
        let exchange = |auth: AuthType| {
            let client = client.clone().set_auth_type(auth);
            let (code, verifier, http) = (code.clone(), pkce_verifier.clone(), &self.http);
            async move {
                let request = client
                    .exchange_code(AuthorizationCode::new(code))
                    .map_err(|e| LoginError::Provider(e.to_string()))?;
                Ok::<_, LoginError>(
                    request
                        .set_pkce_verifier(PkceCodeVerifier::new(verifier))
                        .request_async(http)
                        .await,
                )
            }
        };
        // A client registered for `client_secret_post`: the provider refused the client before
        // looking at the code, which may be sent again in the body.
        let response = match exchange(AuthType::BasicAuth).await? {
            Err(RequestTokenError::ServerResponse(e))
                if *e.error() == CoreErrorResponseType::InvalidClient =>
            {
                exchange(AuthType::RequestBody).await?
            }
            other => other,
        }
        .map_err(|e| LoginError::Token(crate::error::chain(&e)))?;
        let id_token = response
            .id_token()
            .ok_or_else(|| LoginError::Token("the provider sent no ID token".to_owned()))?;
        let nonce = Nonce::new(nonce.to_owned());
        let facts = |claims: &openidconnect::core::CoreIdTokenClaims| {
            (
                claims.email().map(|e| e.as_str().to_owned()),
                claims.subject().as_str().to_owned(),
            )
        };
        let verifier = client.id_token_verifier();
        let (email, subject) = match id_token.claims(&verifier, &nonce) {
            Ok(claims) => facts(claims),
            Err(first) => {
                let fresh = self.client(self.metadata(true).await?)?;
                let verifier = fresh.id_token_verifier();
                let claims = id_token
                    .claims(&verifier, &nonce)
                    .map_err(|_| LoginError::Token(first.to_string()))?;
                facts(claims)
            }
        };
        // The token is verified above; its payload is read again for the roles claim, which
        // the standard claims do not name.
        let payload = jwt_payload(&id_token.to_string());
        let mut email = email.filter(|e| !e.is_empty());
        let mut groups = claim_values(&payload, &self.settings.roles_claim);
        if email.is_none() || groups.is_empty() {
            if let Some(url) = userinfo {
                let answer = self
                    .userinfo(url.url().clone(), response.access_token().secret())
                    .await?;
                if answer.get("sub").and_then(|s| s.as_str()) != Some(subject.as_str()) {
                    return Err(LoginError::Token(
                        "the userinfo answer is about another subject".to_owned(),
                    ));
                }
                if email.is_none() {
                    email = answer
                        .get("email")
                        .and_then(|e| e.as_str())
                        .filter(|e| !e.is_empty())
                        .map(str::to_owned);
                }
                if groups.is_empty() {
                    groups = claim_values(&answer, &self.settings.roles_claim);
                }
            }
        }
        let email = email.ok_or(LoginError::NoEmail)?;
        Ok(Identity { email, groups })
    }

    /// The provider's userinfo answer for this access token (a JSON object).
    async fn userinfo(
        &self,
        url: url::Url,
        access_token: &str,
    ) -> Result<serde_json::Value, LoginError> {
        let answer = self
            .http
            .get(url)
            .bearer_auth(access_token)
            .header("accept", "application/json")
            .send()
            .await
            .and_then(openidconnect::reqwest::Response::error_for_status)
            .map_err(|e| LoginError::Provider(format!("userinfo: {}", crate::error::chain(&e))))?;
        let bytes = answer
            .bytes()
            .await
            .map_err(|e| LoginError::Provider(format!("userinfo: {e}")))?;
        serde_json::from_slice(&bytes)
            .map_err(|_| LoginError::Provider("userinfo: not a JSON object".to_owned()))
    }
}

/// A JWT's payload as JSON (`Null` when it is not one).
fn jwt_payload(jwt: &str) -> serde_json::Value {
    jwt.split('.')
        .nth(1)
        .and_then(|payload| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .ok()
        })
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// The strings of `claim` in a JSON object (an ID token's payload, a userinfo answer): an array
/// of strings or one string. A dotted name (`realm_access.roles`, as Keycloak writes roles)
/// walks into objects.
fn claim_values(claims: &serde_json::Value, claim: &str) -> Vec<String> {
    let mut value = claims;
    for part in claim.split('.') {
        match value.get(part) {
            Some(inner) => value = inner,
            None => return Vec::new(),
        }
    }
    match value {
        serde_json::Value::String(one) => vec![one.clone()],
        serde_json::Value::Array(items) => items
            .iter()
            .filter_map(|item| item.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &serde_json::Value) -> String {
        let encode = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!(
            "{}.{}.sig",
            encode(br#"{"alg":"RS256"}"#),
            encode(payload.to_string().as_bytes())
        )
    }

    #[test]
    fn roles_come_from_a_list_a_string_or_a_nested_claim() {
        let token = jwt(&serde_json::json!({
            "groups": ["a", "b", 3], "role": "ops", "realm_access": {"roles": ["x"]}
        }));
        let payload = jwt_payload(&token);
        assert_eq!(claim_values(&payload, "groups"), ["a", "b"]);
        assert_eq!(claim_values(&payload, "role"), ["ops"]);
        assert_eq!(claim_values(&payload, "realm_access.roles"), ["x"]);
        assert!(claim_values(&payload, "missing").is_empty());
        assert!(claim_values(&jwt_payload("not a jwt"), "groups").is_empty());
    }

    #[test]
    fn the_highest_role_of_any_group_wins() {
        let settings = ConsoleSettings {
            url: url::Url::parse("https://ops.example.com").unwrap(),
            issuer: "https://id.example.com".into(),
            client_id: "keyward".into(),
            client_secret: secrecy::SecretString::from("s".to_owned()),
            roles_claim: "groups".into(),
            groups: [
                vec!["admins".into()],
                vec!["ops".into()],
                vec!["support".into()],
            ],
        };
        let role = |groups: &[&str]| {
            let groups: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
            Role::of(&groups, &settings)
        };
        assert_eq!(role(&["support", "ops"]), Some(Role::Operator));
        assert_eq!(role(&["admins"]), Some(Role::Admin));
        assert_eq!(role(&["support"]), Some(Role::Viewer));
        assert_eq!(role(&["finance"]), None);
        assert_eq!(role(&[]), None);
    }
}
