//! One-time link tokens: 32 bytes from the OS CSPRNG, base64url without padding (43 chars).
//! Stored only as their SHA-256; the token itself lives in the email and nowhere else.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use rand::{CryptoRng, RngCore};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use std::fmt;

const TOKEN_BYTES: usize = 32;
const TOKEN_CHARS: usize = 43;

#[derive(Clone)]
pub struct LinkToken(SecretString);

/// SHA-256 of a link token: the only form in which a token is stored or looked up.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({}…)", hex::encode(&self.0[..4]))
    }
}

impl LinkToken {
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut bytes = [0u8; TOKEN_BYTES];
        rng.fill_bytes(&mut bytes);
        Self(SecretString::from(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// `None` for anything that is not 43 base64url characters decoding to 32 bytes.
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != TOKEN_CHARS {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(s).ok()?;
        (bytes.len() == TOKEN_BYTES).then(|| Self(SecretString::from(s.to_owned())))
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash(Sha256::digest(self.0.expose_secret().as_bytes()).into())
    }
}

impl ExposeSecret<str> for LinkToken {
    fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for LinkToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LinkToken([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_is_43_url_safe_chars_and_parses() {
        let token = LinkToken::generate(&mut rand::rngs::OsRng);
        let text = token.expose_secret();
        assert_eq!(text.len(), 43);
        assert!(text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(LinkToken::parse(text).map(|t| t.hash()), Some(token.hash()));
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        assert!(LinkToken::parse("short").is_none());
        assert!(LinkToken::parse(&"+".repeat(43)).is_none());
        assert!(LinkToken::parse(&"é".repeat(22)).is_none());
    }
}
