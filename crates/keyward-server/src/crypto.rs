//! Encryption at rest: AES-256-GCM under the master key, a fresh random nonce each time, and
//! associated data that binds each ciphertext to its row (so a ciphertext copied into another
//! row does not decrypt). Stored form: nonce (12 bytes) ‖ ciphertext ‖ tag.

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{AeadCore, Aes256Gcm, Key, Nonce};
use base64::{engine::general_purpose::STANDARD, Engine};
use secrecy::{ExposeSecret, SecretBox};

const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error("the master key must be 32 random bytes written in standard base64 (44 characters), for example the output of `openssl rand -base64 32`")]
    Malformed,
}

/// The master key. Never printed: `Debug` is redacted by `SecretBox`.
pub struct MasterKey(SecretBox<[u8; 32]>);

impl MasterKey {
    /// Parses standard base64 of 32 bytes; surrounding whitespace (a trailing newline) is fine.
    pub fn from_base64(text: &str) -> Result<Self, MasterKeyError> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| MasterKeyError::Malformed)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| MasterKeyError::Malformed)?;
        Ok(Self(SecretBox::new(Box::new(key))))
    }

    pub fn generate() -> Self {
        let key: [u8; 32] = Aes256Gcm::generate_key(OsRng).into();
        Self(SecretBox::new(Box::new(key)))
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0.expose_secret())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("a stored ciphertext did not decrypt: wrong master key, or the row was tampered with")]
pub struct DecryptError;

#[derive(Debug, thiserror::Error)]
#[error("could not encrypt a value (AES-GCM refuses plaintexts over 64 GiB)")]
pub struct EncryptError;

/// Encrypts and decrypts what we keep at rest: encrypts under the master key, decrypts under
/// it or, during a master-key rotation, under the previous one
/// (`KEYWARD_MASTER_KEY_PREVIOUS`).
#[derive(Clone)]
pub struct Cipher {
    current: Aes256Gcm,
    previous: Option<Aes256Gcm>,
}

/// Which key a ciphertext decrypted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhichKey {
    Current,
    Previous,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher([REDACTED])")
    }
}

impl Cipher {
    pub fn new(key: &MasterKey) -> Self {
        Self {
            current: aes(key),
            previous: None,
        }
    }

    /// Encrypts under `current`; decrypts under `current` or `previous`.
    pub fn with_previous(current: &MasterKey, previous: &MasterKey) -> Self {
        Self {
            current: aes(current),
            previous: Some(aes(previous)),
        }
    }

    pub fn encrypt(
        &self,
        plaintext: &[u8],
        associated_data: &str,
    ) -> Result<Vec<u8>, EncryptError> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let payload = Payload {
            msg: plaintext,
            aad: associated_data.as_bytes(),
        };
        let ciphertext = self
            .current
            .encrypt(&nonce, payload)
            .map_err(|_| EncryptError)?;
        let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    pub fn decrypt(&self, stored: &[u8], associated_data: &str) -> Result<Vec<u8>, DecryptError> {
        self.decrypt_which(stored, associated_data)
            .map(|(plain, _)| plain)
    }

    /// Decrypts, and says under which key (a rotation re-encrypts what the previous key
    /// decrypted).
    pub fn decrypt_which(
        &self,
        stored: &[u8],
        associated_data: &str,
    ) -> Result<(Vec<u8>, WhichKey), DecryptError> {
        if stored.len() < NONCE_LEN + 16 {
            return Err(DecryptError);
        }
        let (nonce, ciphertext) = stored.split_at(NONCE_LEN);
        let attempt = |aes: &Aes256Gcm| {
            let payload = Payload {
                msg: ciphertext,
                aad: associated_data.as_bytes(),
            };
            aes.decrypt(Nonce::from_slice(nonce), payload).ok()
        };
        if let Some(plain) = attempt(&self.current) {
            return Ok((plain, WhichKey::Current));
        }
        match self.previous.as_ref().and_then(attempt) {
            Some(plain) => Ok((plain, WhichKey::Previous)),
            None => Err(DecryptError),
        }
    }
}

fn aes(key: &MasterKey) -> Aes256Gcm {
    Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key.0.expose_secret()))
}

/// Associated data of a partner's secret key: binds it to its partner and key rows.
pub fn secret_key_aad(partner_id: &str, key_id: &str) -> String {
    format!("keyward/secret-key/v1/{partner_id}/{key_id}")
}

/// Associated data of a queued email body.
pub fn outbox_aad(email_id: &str) -> String {
    format!("keyward/outbox/v1/{email_id}")
}

/// Associated data of a webhook endpoint's signing secret.
pub fn webhook_secret_aad(endpoint_id: &str) -> String {
    format!("keyward/webhook-secret/v1/{endpoint_id}")
}

/// Associated data of the value that proves, at start, that the master key is the right one.
pub const MASTER_KEY_CHECK_AAD: &str = "keyward/master-key-check/v1";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ciphertext_moved_to_another_row_does_not_decrypt() {
        let cipher = Cipher::new(&MasterKey::generate());
        let stored = cipher
            .encrypt(b"sk_partner_x", &secret_key_aad("p1", "k1"))
            .unwrap();
        assert!(cipher
            .decrypt(&stored, &secret_key_aad("p1", "k1"))
            .is_ok_and(|p| p == b"sk_partner_x"));
        assert!(cipher
            .decrypt(&stored, &secret_key_aad("p2", "k1"))
            .is_err());
        assert!(cipher
            .decrypt(&stored, &secret_key_aad("p1", "k2"))
            .is_err());
    }

    #[test]
    fn during_a_rotation_either_key_decrypts_and_the_new_one_encrypts() {
        let (old, new) = (MasterKey::generate(), MasterKey::generate());
        let under_old = Cipher::new(&old).encrypt(b"x", "a").unwrap();
        let rotating = Cipher::with_previous(&new, &old);
        assert_eq!(
            rotating.decrypt_which(&under_old, "a").unwrap(),
            (b"x".to_vec(), WhichKey::Previous)
        );
        let under_new = rotating.encrypt(b"y", "a").unwrap();
        assert_eq!(
            Cipher::new(&new).decrypt_which(&under_new, "a").unwrap(),
            (b"y".to_vec(), WhichKey::Current)
        );
        assert!(Cipher::new(&old).decrypt(&under_new, "a").is_err());
    }

    #[test]
    fn each_encryption_uses_a_fresh_nonce() {
        let cipher = Cipher::new(&MasterKey::generate());
        assert_ne!(
            cipher.encrypt(b"x", "a").unwrap(),
            cipher.encrypt(b"x", "a").unwrap()
        );
    }

    #[test]
    fn another_master_key_cannot_decrypt() {
        let stored = Cipher::new(&MasterKey::generate())
            .encrypt(b"x", "a")
            .unwrap();
        assert!(Cipher::new(&MasterKey::generate())
            .decrypt(&stored, "a")
            .is_err());
        assert!(Cipher::new(&MasterKey::generate())
            .decrypt(&[1, 2, 3], "a")
            .is_err());
    }

    #[test]
    fn master_keys_round_trip_through_base64_with_a_newline() {
        let key = MasterKey::generate();
        let again = MasterKey::from_base64(&format!("{}\n", key.to_base64()));
        assert!(again.is_ok_and(|k| k.to_base64() == key.to_base64()));
        assert!(MasterKey::from_base64("c2hvcnQ=").is_err());
        assert!(MasterKey::from_base64("not base64!").is_err());
        assert!(!format!("{:?}", key.0).contains(&key.to_base64()));
    }
}
