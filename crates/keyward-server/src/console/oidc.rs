//! The console's login (SPEC §10.1): OpenID Connect's authorization-code flow with PKCE,
//! `state` and `nonce`, through the `openidconnect` crate. The provider is discovered from its
//! issuer (the discovery document and its JWKS, kept for a few minutes); the ID token's
//! signature, `iss`, `aud`, `exp` and `nonce` are checked by the crate; the role comes from
//! the configured claim of that verified token.

use crate::config::ConsoleSettings;
use base64::Engine as _;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
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
        let issuer = IssuerUrl::new(
            self.settings
                .issuer
                .as_str()
                .trim_end_matches('/')
                .to_owned(),
        )
        .map_err(|e| LoginError::Provider(e.to_string()))?;
        let metadata = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| LoginError::Provider(error_chain(&e)))?;
        *discovered = Some((Instant::now(), metadata.clone()));
        Ok(metadata)
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
    /// rotated its keys).
    pub async fn finish(
        &self,
        code: String,
        nonce: &str,
        pkce_verifier: String,
    ) -> Result<Identity, LoginError> {
        let client = self.client(self.metadata(false).await?)?;
        let response = client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|e| LoginError::Provider(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier))
            .request_async(&self.http)
            .await
            .map_err(|e| LoginError::Token(error_chain(&e)))?;
        let id_token = response
            .id_token()
            .ok_or_else(|| LoginError::Token("the provider sent no ID token".to_owned()))?;
        let nonce = Nonce::new(nonce.to_owned());
        let email_of = |claims: &openidconnect::core::CoreIdTokenClaims| {
            claims.email().map(|e| e.as_str().to_owned())
        };
        let verifier = client.id_token_verifier();
        let email = match id_token.claims(&verifier, &nonce) {
            Ok(claims) => email_of(claims),
            Err(first) => {
                let fresh = self.client(self.metadata(true).await?)?;
                let verifier = fresh.id_token_verifier();
                let claims = id_token
                    .claims(&verifier, &nonce)
                    .map_err(|_| LoginError::Token(first.to_string()))?;
                email_of(claims)
            }
        };
        let email = email.filter(|e| !e.is_empty()).ok_or(LoginError::NoEmail)?;
        // The token is verified above; its payload is read again for the roles claim, which
        // the standard claims do not name.
        let groups = claim_values(&id_token.to_string(), &self.settings.roles_claim);
        Ok(Identity { email, groups })
    }
}

/// The strings of `claim` in a JWT's payload: an array of strings or one string. A dotted name
/// (`realm_access.roles`, as Keycloak writes roles) walks into objects.
fn claim_values(jwt: &str, claim: &str) -> Vec<String> {
    let Some(payload) = jwt.split('.').nth(1) else {
        return Vec::new();
    };
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload) else {
        return Vec::new();
    };
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Vec::new();
    };
    for part in claim.split('.') {
        value = match value.get(part) {
            Some(inner) => inner.clone(),
            None => return Vec::new(),
        };
    }
    match value {
        serde_json::Value::String(one) => vec![one],
        serde_json::Value::Array(items) => items
            .into_iter()
            .filter_map(|item| item.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
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
        assert_eq!(claim_values(&token, "groups"), ["a", "b"]);
        assert_eq!(claim_values(&token, "role"), ["ops"]);
        assert_eq!(claim_values(&token, "realm_access.roles"), ["x"]);
        assert!(claim_values(&token, "missing").is_empty());
        assert!(claim_values("not a jwt", "groups").is_empty());
    }

    #[test]
    fn the_highest_role_of_any_group_wins() {
        let settings = ConsoleSettings {
            url: url::Url::parse("https://ops.example.com").unwrap(),
            issuer: url::Url::parse("https://id.example.com").unwrap(),
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
