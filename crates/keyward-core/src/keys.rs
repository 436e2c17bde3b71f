//! Partner keys, `pk_partner_…` and `sk_partner_…`, and the exchange's service tokens,
//! `kw_service_…` (SPEC §7.1), which follow the same format rules.
//!
//! The format is part of the public contract (SPEC §1) and partners store these keys:
//! **never change the prefixes, the length, the alphabet or the checksum.**
//! A key is `prefix` + 30 random base62 characters + a 6-character checksum, the checksum being
//! CRC-32 (zlib) of the ASCII bytes of prefix + random part, written in base62 and left-padded
//! with `0`. The checksum lets us reject a mistyped or truncated key without touching storage.
//!
//! ```
//! use keyward_core::{KeyPair, PublicKey};
//!
//! let pair = KeyPair::generate(&mut rand::rngs::OsRng);
//! assert!(PublicKey::parse(pair.public.as_str()).is_ok());
//! // One character off and the checksum catches it.
//! assert!(PublicKey::parse("pk_partner_BSB8wIYc6sE7hIysyRYv9Z0oCJif3k38fgkr").is_err());
//! assert!(PublicKey::parse("pk_partner_BSB8wIYc6sE7hIysyRYv9Z0oCJif3k38fgkq").is_ok());
//! ```

use rand::{CryptoRng, RngCore};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use std::fmt;

/// Base62 alphabet, value order: `0-9`, `A-Z`, `a-z`.
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
pub(crate) const RANDOM_LEN: usize = 30;
pub(crate) const CHECKSUM_LEN: usize = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Public,
    Secret,
    /// A test key's public half (SPEC §8.3): never forwarded to the live upstream.
    TestPublic,
    TestSecret,
    /// A token the exchange's own services present to the verify API.
    Service,
}

impl KeyKind {
    pub const fn prefix(self) -> &'static str {
        match self {
            KeyKind::Public => "pk_partner_",
            KeyKind::Secret => "sk_partner_",
            KeyKind::TestPublic => "pk_test_partner_",
            KeyKind::TestSecret => "sk_test_partner_",
            KeyKind::Service => "kw_service_",
        }
    }

    const fn len(self) -> usize {
        self.prefix().len() + RANDOM_LEN + CHECKSUM_LEN
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    #[error("the key must start with `{0}`")]
    Prefix(&'static str),
    #[error("the key must be {0} characters long")]
    Length(usize),
    #[error("the key may only contain the letters A-Z, a-z and the digits 0-9 after its prefix")]
    Alphabet,
    #[error("the key's checksum does not match: it was probably mistyped or truncated")]
    Checksum,
    #[error("the key must have 8 to 128 letters and digits after its prefix")]
    LegacyLength,
}

/// The shortest and longest run of letters and digits a legacy key (SPEC §10.2) has after its
/// prefix.
const LEGACY_LEN: std::ops::RangeInclusive<usize> = 8..=128;

/// Checks the shape of `s` as a legacy key of `kind` (only live keys have one): the prefix
/// and 8–128 letters and digits, no checksum. A key of §1's format has this shape too.
fn check_legacy_format(kind: KeyKind, s: &str) -> Result<(), KeyFormatError> {
    let body = s
        .strip_prefix(kind.prefix())
        .ok_or(KeyFormatError::Prefix(kind.prefix()))?;
    if !LEGACY_LEN.contains(&body.len()) {
        return Err(KeyFormatError::LegacyLength);
    }
    if !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(KeyFormatError::Alphabet);
    }
    Ok(())
}

/// Checks the shape of `s` as a key of `kind`, without looking anything up.
fn check_format(kind: KeyKind, s: &str) -> Result<(), KeyFormatError> {
    let body = s
        .strip_prefix(kind.prefix())
        .ok_or(KeyFormatError::Prefix(kind.prefix()))?;
    if s.len() != kind.len() {
        return Err(KeyFormatError::Length(kind.len()));
    }
    if !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(KeyFormatError::Alphabet);
    }
    let (random, checksum) = s.split_at(kind.prefix().len() + RANDOM_LEN);
    if checksum.as_bytes() != checksum_digits(random) {
        return Err(KeyFormatError::Checksum);
    }
    Ok(())
}

/// CRC-32 (zlib / ISO-HDLC) of `text`, in base62, left-padded with `0` to 6 characters.
pub(crate) fn encode_checksum(text: &str) -> String {
    checksum_digits(text)
        .iter()
        .map(|&b| char::from(b))
        .collect()
}

/// [`encode_checksum`]'s digits, without a string: what every key presented is checked against.
fn checksum_digits(text: &str) -> [u8; CHECKSUM_LEN] {
    let mut value = crc32fast::hash(text.as_bytes());
    let mut digits = [b'0'; CHECKSUM_LEN];
    // 62^6 > 2^32, so six digits always hold a CRC-32.
    for digit in digits.iter_mut().rev() {
        *digit = BASE62[(value % 62) as usize];
        value /= 62;
    }
    digits
}

/// Whether a pair is live or a test pair (SPEC §8.3), as its prefixes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KeyMode {
    #[default]
    Live,
    Test,
}

impl KeyMode {
    pub const fn as_str(self) -> &'static str {
        match self {
            KeyMode::Live => "live",
            KeyMode::Test => "test",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "live" => Some(KeyMode::Live),
            "test" => Some(KeyMode::Test),
            _ => None,
        }
    }

    const fn public_kind(self) -> KeyKind {
        match self {
            KeyMode::Live => KeyKind::Public,
            KeyMode::Test => KeyKind::TestPublic,
        }
    }

    const fn secret_kind(self) -> KeyKind {
        match self {
            KeyMode::Live => KeyKind::Secret,
            KeyMode::Test => KeyKind::TestSecret,
        }
    }
}

/// The mode a key text claims by its prefix: test keys start `pk_test_`/`sk_test_`. A text that
/// starts neither way is checked as live (so its error names the live prefix).
fn claimed_mode(s: &str) -> KeyMode {
    if s.starts_with(KeyKind::TestPublic.prefix()) || s.starts_with(KeyKind::TestSecret.prefix()) {
        KeyMode::Test
    } else {
        KeyMode::Live
    }
}

fn generate(kind: KeyKind, rng: &mut (impl RngCore + CryptoRng)) -> String {
    generate_with_prefix(kind.prefix(), rng)
}

/// `prefix` + 30 random base62 characters + their checksum (the §1 shape of every token): for
/// samples and tests of the scanners.
pub fn generate_with_prefix(prefix: &str, rng: &mut (impl RngCore + CryptoRng)) -> String {
    let mut key = String::with_capacity(prefix.len() + RANDOM_LEN + CHECKSUM_LEN);
    key.push_str(prefix);
    while key.len() < prefix.len() + RANDOM_LEN {
        let mut byte = [0u8; 1];
        rng.fill_bytes(&mut byte);
        // Rejection sampling keeps every character equally likely: 248 = 4 * 62.
        if byte[0] < 248 {
            key.push(char::from(BASE62[usize::from(byte[0] % 62)]));
        }
    }
    let checksum = encode_checksum(&key);
    key.push_str(&checksum);
    key
}

/// SHA-256 of the full key text. Public keys are stored only as this hash; the keys carry 178
/// bits of randomness, so a fast unsalted hash is the right tool (as for GitHub's tokens).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash([u8; 32]);

impl KeyHash {
    pub fn of(text: &str) -> Self {
        Self(Sha256::digest(text.as_bytes()).into())
    }

    /// A hash read back from storage.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({}…)", hex::encode(&self.0[..4]))
    }
}

/// A well-formed public key. Not secret on its own, but it is only ever stored hashed.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PublicKey {
    text: String,
    /// Only of the legacy shape, not of §1's format (SPEC §10.2).
    legacy: bool,
}

impl PublicKey {
    /// A live (`pk_partner_`) or test (`pk_test_partner_`) public key.
    pub fn parse(s: &str) -> Result<Self, KeyFormatError> {
        check_format(claimed_mode(s).public_kind(), s)?;
        Ok(Self {
            text: s.to_owned(),
            legacy: false,
        })
    }

    /// A key of §1's format as [`parse`](Self::parse) takes it, or else a live key of the
    /// legacy shape (`pk_partner_` + 8–128 letters and digits, SPEC §10.2), marked as such.
    /// When the text fits neither, the error is §1's.
    pub fn parse_or_legacy(s: &str) -> Result<Self, KeyFormatError> {
        Self::parse(s).or_else(|strict| {
            check_legacy_format(KeyKind::Public, s).map_err(|_| strict)?;
            Ok(Self {
                text: s.to_owned(),
                legacy: true,
            })
        })
    }

    /// Whether the key is only of the legacy shape, not of §1's format.
    pub fn is_legacy(&self) -> bool {
        self.legacy
    }

    pub fn mode(&self) -> KeyMode {
        claimed_mode(&self.text)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn hash(&self) -> KeyHash {
        KeyHash::of(&self.text)
    }

    /// A short, non-secret label for logs: the prefix and the first four random characters.
    pub fn redacted(&self) -> String {
        format!(
            "{}…",
            &self.text[..self.mode().public_kind().prefix().len() + 4]
        )
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.redacted())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A well-formed secret key. Its `Debug` is redacted; read it with [`ExposeSecret`].
#[derive(Clone)]
pub struct SecretKey(SecretString);

impl SecretKey {
    /// A live (`sk_partner_`) or test (`sk_test_partner_`) secret key.
    pub fn parse(s: &str) -> Result<Self, KeyFormatError> {
        check_format(claimed_mode(s).secret_kind(), s)?;
        Ok(Self(SecretString::from(s.to_owned())))
    }

    /// A key of §1's format, or else a live key of the legacy shape (`sk_partner_` + 8–128
    /// letters and digits, SPEC §10.2). When the text fits neither, the error is §1's.
    pub fn parse_or_legacy(s: &str) -> Result<Self, KeyFormatError> {
        Self::parse(s).or_else(|strict| {
            check_legacy_format(KeyKind::Secret, s).map_err(|_| strict)?;
            Ok(Self(SecretString::from(s.to_owned())))
        })
    }

    /// Whether the key is only of the legacy shape, not of §1's format.
    pub fn is_legacy(&self) -> bool {
        check_format(self.mode().secret_kind(), self.0.expose_secret()).is_err()
    }

    pub fn mode(&self) -> KeyMode {
        claimed_mode(self.0.expose_secret())
    }

    /// SHA-256 of the key: how a secret key reported as leaked is found (SPEC §9.2).
    pub fn hash(&self) -> KeyHash {
        KeyHash::of(self.0.expose_secret())
    }
}

impl ExposeSecret<str> for SecretKey {
    fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey([REDACTED])")
    }
}

/// A fresh key pair.
#[derive(Debug, Clone)]
pub struct KeyPair {
    pub public: PublicKey,
    pub secret: SecretKey,
}

impl KeyPair {
    /// A live pair.
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        Self::generate_in(KeyMode::Live, rng)
    }

    /// A pair of `mode`: test pairs carry the `_test_` prefixes.
    pub fn generate_in(mode: KeyMode, rng: &mut (impl RngCore + CryptoRng)) -> Self {
        Self {
            public: PublicKey {
                text: generate(mode.public_kind(), rng),
                legacy: false,
            },
            secret: SecretKey(SecretString::from(generate(mode.secret_kind(), rng))),
        }
    }
}

/// A service token (`kw_service_…`): shown once when created, stored only as its hash. Its
/// `Debug` is redacted; read it with [`ExposeSecret`].
#[derive(Clone)]
pub struct ServiceToken(SecretString);

impl ServiceToken {
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        Self(SecretString::from(generate(KeyKind::Service, rng)))
    }

    pub fn parse(s: &str) -> Result<Self, KeyFormatError> {
        check_format(KeyKind::Service, s)?;
        Ok(Self(SecretString::from(s.to_owned())))
    }

    pub fn hash(&self) -> KeyHash {
        KeyHash::of(self.0.expose_secret())
    }

    /// A short, non-secret label to tell tokens apart: the prefix and four characters.
    pub fn hint(&self) -> String {
        format!(
            "{}…",
            &self.0.expose_secret()[..KeyKind::Service.prefix().len() + 4]
        )
    }
}

impl ExposeSecret<str> for ServiceToken {
    fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for ServiceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServiceToken([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn service_tokens_have_the_key_format_with_their_own_prefix() {
        let token = ServiceToken::generate(&mut rand::rngs::OsRng);
        let text = token.expose_secret().to_owned();
        assert!(text.starts_with("kw_service_"));
        assert_eq!(text.len(), 47);
        assert!(ServiceToken::parse(&text).is_ok_and(|t| t.hash() == token.hash()));
        assert!(!format!("{token:?}").contains(&text));
        assert!(token.hint().starts_with("kw_service_") && token.hint().len() < 20);
        // A partner key is not a service token, and one changed character is caught.
        let pair = KeyPair::generate(&mut rand::rngs::OsRng);
        assert!(ServiceToken::parse(pair.public.as_str()).is_err());
        let mut typo = text.clone().into_bytes();
        typo[20] = if typo[20] == b'a' { b'b' } else { b'a' };
        assert!(ServiceToken::parse(&String::from_utf8(typo).unwrap()).is_err());
    }

    #[test]
    fn generated_keys_parse_back() {
        let pair = KeyPair::generate(&mut rand::rngs::OsRng);
        assert!(PublicKey::parse(pair.public.as_str()).is_ok());
        assert!(SecretKey::parse(pair.secret.expose_secret()).is_ok());
        assert_eq!(pair.public.as_str().len(), 47);
    }

    #[test]
    fn a_secret_key_is_redacted_in_debug() {
        let pair = KeyPair::generate(&mut rand::rngs::OsRng);
        let debug = format!("{pair:?}");
        assert!(!debug.contains(pair.secret.expose_secret()));
        assert!(!debug.contains(pair.public.as_str()));
    }

    #[test]
    fn test_keys_have_their_own_prefixes_and_parse_as_keys() {
        let pair = KeyPair::generate_in(KeyMode::Test, &mut rand::rngs::OsRng);
        assert!(pair.public.as_str().starts_with("pk_test_partner_"));
        assert_eq!(pair.public.as_str().len(), 52);
        assert!(pair.secret.expose_secret().starts_with("sk_test_partner_"));
        let public = PublicKey::parse(pair.public.as_str()).unwrap();
        assert_eq!(public.mode(), KeyMode::Test);
        assert_eq!(pair.secret.mode(), KeyMode::Test);
        assert!(public.redacted().starts_with("pk_test_partner_") && public.redacted().len() < 24);
        // A live key's text with `test_` spliced in fails its checksum.
        let live = KeyPair::generate(&mut rand::rngs::OsRng).public;
        let spliced = live.as_str().replace("pk_partner_", "pk_test_partner_");
        assert_eq!(
            PublicKey::parse(&spliced).err(),
            Some(KeyFormatError::Checksum)
        );
        assert_eq!(live.mode(), KeyMode::Live);
    }

    #[test]
    fn a_public_key_is_not_a_secret_key() {
        let pair = KeyPair::generate(&mut rand::rngs::OsRng);
        assert_eq!(
            SecretKey::parse(pair.public.as_str()).err(),
            Some(KeyFormatError::Prefix("sk_partner_"))
        );
    }

    #[test]
    fn the_checksum_is_padded_base62_of_crc32() {
        // CRC-32 of "" is 0 → "000000"; of "a" is 0xe8b7be43 = 3904355907.
        assert_eq!(encode_checksum(""), "000000");
        let mut v: u64 = 3_904_355_907;
        let mut expect = Vec::new();
        while v > 0 {
            expect.push(BASE62[(v % 62) as usize]);
            v /= 62;
        }
        while expect.len() < 6 {
            expect.push(b'0');
        }
        expect.reverse();
        assert_eq!(encode_checksum("a").as_bytes(), &expect[..]);
    }

    #[test]
    fn legacy_keys_have_the_published_shape_and_are_marked() {
        let native = KeyPair::generate(&mut rand::rngs::OsRng);
        let parsed = PublicKey::parse_or_legacy(native.public.as_str()).unwrap();
        assert!(!parsed.is_legacy(), "a key of §1's format is not legacy");
        assert!(!SecretKey::parse_or_legacy(native.secret.expose_secret())
            .unwrap()
            .is_legacy());

        for body in ["abcd1234", &"Z9".repeat(64)] {
            let public = PublicKey::parse_or_legacy(&format!("pk_partner_{body}")).unwrap();
            assert!(public.is_legacy());
            assert!(
                PublicKey::parse(public.as_str()).is_err(),
                "§1 alone still refuses it"
            );
            assert_eq!(public.mode(), KeyMode::Live);
            let secret = SecretKey::parse_or_legacy(&format!("sk_partner_{body}")).unwrap();
            assert!(secret.is_legacy());
        }
        // A mistyped key of §1's length has the legacy shape: whether it is looked up is the
        // server's decision (only while legacy keys are held).
        let mut typo = native.public.as_str().to_owned();
        typo.replace_range(20..21, if &typo[20..21] == "a" { "b" } else { "a" });
        assert!(PublicKey::parse_or_legacy(&typo).unwrap().is_legacy());

        for refused in [
            "pk_partner_abc1234".to_owned(),           // 7 characters
            format!("pk_partner_{}", "a".repeat(129)), // 129
            "pk_partner_abcd-1234".to_owned(),         // not a letter or digit
            "pk_test_partner_abcd1234".to_owned(),     // test keys have no legacy shape
            "sk_partner_abcd1234".to_owned(),          // a secret key where a public one belongs
        ] {
            let error = PublicKey::parse_or_legacy(&refused).unwrap_err();
            assert_eq!(
                error,
                PublicKey::parse(&refused).unwrap_err(),
                "{refused}: §1's error"
            );
        }
        assert!(SecretKey::parse_or_legacy("pk_partner_abcd1234").is_err());
    }

    proptest! {
        #[test]
        fn any_single_character_change_is_caught(index in 11usize..47, replacement in "[0-9A-Za-z]") {
            let pair = KeyPair::generate(&mut rand::rngs::OsRng);
            let mut key = pair.public.as_str().to_owned();
            let original = &key[index..=index];
            prop_assume!(original != replacement);
            key.replace_range(index..=index, &replacement);
            prop_assert!(PublicKey::parse(&key).is_err());
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,60}") {
            let _ = PublicKey::parse(&s);
            let _ = SecretKey::parse(&s);
            let _ = PublicKey::parse(&format!("pk_test_partner_{s}"));
            let _ = PublicKey::parse_or_legacy(&format!("pk_partner_{s}"));
            let _ = SecretKey::parse_or_legacy(&format!("sk_partner_{s}"));
        }
    }
}
