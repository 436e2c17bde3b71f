//! Finding keyward's tokens in text (SPEC §9.1): every token of the §1/§8 formats whose
//! checksum is valid. The formats were made for this: a fixed prefix, a fixed length and a
//! CRC-32 checksum, so a match is almost never a false positive. No I/O here: `keyward scan`
//! reads the files and the git history.

use crate::keys::{encode_checksum, CHECKSUM_LEN, RANDOM_LEN};
use memchr::memmem;
use sha2::{Digest, Sha256};

/// The kinds of token, by prefix. The prefixes are part of the public format: never change them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    PublicKey,
    SecretKey,
    TestPublicKey,
    TestSecretKey,
    ServiceToken,
}

impl TokenKind {
    pub const ALL: [TokenKind; 5] = [
        TokenKind::PublicKey,
        TokenKind::SecretKey,
        TokenKind::TestPublicKey,
        TokenKind::TestSecretKey,
        TokenKind::ServiceToken,
    ];

    pub const fn prefix(self) -> &'static str {
        match self {
            TokenKind::PublicKey => "pk_partner_",
            TokenKind::SecretKey => "sk_partner_",
            TokenKind::TestPublicKey => "pk_test_partner_",
            TokenKind::TestSecretKey => "sk_test_partner_",
            TokenKind::ServiceToken => "kw_service_",
        }
    }

    /// The kind of a whole token, if it is one of ours with a valid checksum.
    pub fn of(token: &str) -> Option<TokenKind> {
        Self::ALL.into_iter().find(|&kind| valid(kind, token))
    }

    /// Whether the token is a partner's key (public or secret, live or test).
    pub const fn is_partner_key(self) -> bool {
        !matches!(self, TokenKind::ServiceToken)
    }

    /// Whether the token is a public key (the other kinds are secrets).
    pub const fn is_public(self) -> bool {
        matches!(self, TokenKind::PublicKey | TokenKind::TestPublicKey)
    }

    /// As `keyward scan` names it.
    pub const fn name(self) -> &'static str {
        match self {
            TokenKind::PublicKey => "public_key",
            TokenKind::SecretKey => "secret_key",
            TokenKind::TestPublicKey => "test_public_key",
            TokenKind::TestSecretKey => "test_secret_key",
            TokenKind::ServiceToken => "service_token",
        }
    }
}

/// One token found: its kind, where it starts (a byte offset in the text scanned) and the
/// token itself (never print it whole: see [`Found::hint`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found<'a> {
    pub kind: TokenKind,
    pub offset: usize,
    pub token: &'a str,
}

impl Found<'_> {
    /// The prefix and the first four random characters: enough to tell keys apart, never
    /// enough to use one.
    pub fn hint(&self) -> String {
        format!("{}…", &self.token[..self.kind.prefix().len() + 4])
    }

    /// Lower-case hex SHA-256 of the token: what an operator can look the key up by.
    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(self.token.as_bytes()))
    }
}

/// Every token with a valid checksum in `text`, in order. A token must stand on its own: not
/// preceded or followed by a letter, a digit or `_` (so a longer token is not read as a
/// shorter one).
pub fn find_tokens(text: &[u8]) -> Vec<Found<'_>> {
    let mut found = Vec::new();
    // Every prefix ends in `_partner_` or is `kw_service_`: two fast substring searches.
    for anchor in ["_partner_", "kw_service_"] {
        for at in memmem::find_iter(text, anchor.as_bytes()) {
            for kind in TokenKind::ALL {
                let prefix = kind.prefix().as_bytes();
                let anchor_in_prefix = prefix.len() - anchor.len();
                if !prefix.ends_with(anchor.as_bytes()) || at < anchor_in_prefix {
                    continue;
                }
                let start = at - anchor_in_prefix;
                let end = start + prefix.len() + RANDOM_LEN + CHECKSUM_LEN;
                let Some(candidate) = text.get(start..end) else {
                    continue;
                };
                if !candidate.starts_with(prefix)
                    || start.checked_sub(1).is_some_and(|i| is_token_byte(text[i]))
                    || text.get(end).is_some_and(|&b| is_token_byte(b))
                {
                    continue;
                }
                let Ok(token) = std::str::from_utf8(candidate) else {
                    continue;
                };
                if valid(kind, token) {
                    found.push(Found {
                        kind,
                        offset: start,
                        token,
                    });
                }
            }
        }
    }
    found.sort_by_key(|f| f.offset);
    found
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Whether `token` is a well-formed token of `kind`: its prefix, 30 base62 characters and the
/// CRC-32 checksum of both.
pub fn valid(kind: TokenKind, token: &str) -> bool {
    let prefix = kind.prefix();
    let Some(rest) = token.strip_prefix(prefix) else {
        return false;
    };
    if rest.len() != RANDOM_LEN + CHECKSUM_LEN || !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return false;
    }
    let (signed, checksum) = token.split_at(prefix.len() + RANDOM_LEN);
    checksum == encode_checksum(signed)
}

/// The 1-based line of each offset, for offsets in increasing order.
pub fn lines_of(text: &[u8], offsets: impl IntoIterator<Item = usize>) -> Vec<usize> {
    let mut line = 1;
    let mut counted = 0;
    offsets
        .into_iter()
        .map(|offset| {
            line += memchr::memchr_iter(b'\n', &text[counted..offset.min(text.len())]).count();
            counted = offset.min(text.len());
            line
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::generate_with_prefix;
    use rand::rngs::OsRng;

    #[test]
    fn every_kind_is_found_with_its_line_and_only_with_a_valid_checksum() {
        let tokens: Vec<String> = TokenKind::ALL
            .iter()
            .map(|k| generate_with_prefix(k.prefix(), &mut OsRng))
            .collect();
        let mut text = String::from("first line\n");
        for token in &tokens {
            text.push_str(&format!("key = \"{token}\"\n"));
        }
        let mut broken = tokens[0].clone();
        broken.pop();
        broken.push(if tokens[0].ends_with('0') { '1' } else { '0' });
        text.push_str(&format!("{broken}\nx{}\n{}0\n", tokens[1], tokens[2]));
        let found = find_tokens(text.as_bytes());
        let kinds: Vec<TokenKind> = found.iter().map(|f| f.kind).collect();
        assert_eq!(kinds, TokenKind::ALL, "{found:?}");
        let lines = lines_of(text.as_bytes(), found.iter().map(|f| f.offset));
        assert_eq!(lines, [2, 3, 4, 5, 6]);
        assert!(found
            .iter()
            .all(|f| !f.hint().contains(&f.token[f.kind.prefix().len() + 4..])));
        assert_eq!(found[0].sha256().len(), 64);
        for (token, kind) in tokens.iter().zip(TokenKind::ALL) {
            assert_eq!(TokenKind::of(token), Some(kind));
        }
        assert_eq!(TokenKind::of(&broken), None);
        assert_eq!(TokenKind::of(&format!("{}0", tokens[2])), None);
    }

    #[test]
    fn the_vectors_keys_are_found() {
        let text = b"sk_partner_fbi9lNL7GCHyd6uQEMDFGH19bSqMwB2OfotK pk_partner_BSB8wIYc6sE7hIysyRYv9Z0oCJif3k38fgkq sk_partner_fbi9lNL7GCHyd6uQEMDFGH19bSqMwB2Ofot0";
        let found = find_tokens(text);
        assert_eq!(found.len(), 2);
        assert_eq!(found[1].kind, TokenKind::PublicKey);
    }
}
