//! AES-256-GCM for tokens at rest: a random 96-bit nonce per encryption, associated data
//! binding each ciphertext to its row and column, and key ids so keys can rotate.
//!
//! A stored value is `nonce (12 bytes) || ciphertext || tag (16 bytes)`. The associated data is
//! `upkeep/oauth_tokens/<provider>/<column>`, so a ciphertext copied to another provider's row,
//! or from the access column to the refresh column, fails authentication instead of decrypting
//! to the wrong secret. The key id stored beside the row is a key check value (the GCM tag of
//! an empty message under a fixed nonce): it names the key without revealing anything usable.
//! Nothing here logs, and no error carries a plaintext or a key.

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{AeadCore, Aes256Gcm, Nonce};
use secrecy::{ExposeSecret, SecretBox, SecretString};

/// Length of the random nonce prefixed to every ciphertext.
const NONCE_LEN: usize = 12;

/// Which encrypted column of `oauth_tokens` a ciphertext belongs to (part of the AAD).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    /// `access_token`.
    AccessToken,
    /// `refresh_token`.
    RefreshToken,
}

impl Column {
    /// The column name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AccessToken => "access_token",
            Self::RefreshToken => "refresh_token",
        }
    }
}

/// Why a value could not be encrypted or decrypted. Never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The row is encrypted under a key this process was not given.
    #[error(
        "{column} of {provider:?} is encrypted under key {key_id}, which is neither \
         UPKEEP_SECRET_KEY nor UPKEEP_SECRET_KEY_PREVIOUS"
    )]
    UnknownKey {
        /// The provider.
        provider: String,
        /// The column.
        column: &'static str,
        /// The row's key id.
        key_id: String,
    },
    /// Authentication failed: wrong key, tampering, or a ciphertext moved from another row or
    /// column.
    #[error(
        "{column} of {provider:?} does not decrypt under key {key_id} (tampered, or copied \
         from another row or column)"
    )]
    Refused {
        /// The provider.
        provider: String,
        /// The column.
        column: &'static str,
        /// The key id tried.
        key_id: String,
    },
    /// The decrypted bytes are not UTF-8 (cannot happen for values we wrote).
    #[error("{column} of {provider:?} decrypted to something that is not text")]
    NotText {
        /// The provider.
        provider: String,
        /// The column.
        column: &'static str,
    },
    /// Encryption failed (the AEAD refuses only absurd lengths).
    #[error("encryption failed")]
    Encrypt,
}

/// One AES-256 key with its id.
pub struct Key {
    id: String,
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Key {
    /// A key from its 32 raw bytes.
    #[must_use]
    pub fn new(bytes: &SecretBox<[u8; 32]>) -> Self {
        let cipher = Aes256Gcm::new(bytes.expose_secret().into());
        // The check value depends only on the key; a fixed nonce is safe here because the
        // message is empty and never varies.
        let check = cipher
            .encrypt(
                &Nonce::from([0u8; NONCE_LEN]),
                Payload {
                    msg: b"",
                    aad: b"upkeep key id",
                },
            )
            .unwrap_or_default();
        let id = check.iter().take(6).map(|b| format!("{b:02x}")).collect();
        Self { id, cipher }
    }

    /// The key id stored in `oauth_tokens.key_id`.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// The current key (encrypts and decrypts) and optionally the previous one (decrypts only,
/// until `tokens rotate-key` has re-encrypted every row).
#[derive(Debug)]
pub struct Keyring {
    current: Key,
    previous: Option<Key>,
}

/// A ciphertext and the id of the key that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// `nonce || ciphertext || tag`.
    pub bytes: Vec<u8>,
    /// The key id.
    pub key_id: String,
}

impl Keyring {
    /// A keyring with `current` and, during a rotation, `previous`.
    #[must_use]
    pub fn new(current: Key, previous: Option<Key>) -> Self {
        Self { current, previous }
    }

    /// The id new ciphertexts are made under.
    #[must_use]
    pub fn current_id(&self) -> &str {
        self.current.id()
    }

    /// Encrypts `plaintext` for `column` of `provider`'s row under the current key, with a
    /// fresh random nonce.
    ///
    /// # Errors
    /// [`CryptoError::Encrypt`] only for absurd lengths.
    pub fn seal(
        &self,
        provider: &str,
        column: Column,
        plaintext: &SecretString,
    ) -> Result<Sealed, CryptoError> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let aad = aad(provider, column);
        let ciphertext = self
            .current
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.expose_secret().as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Encrypt)?;
        let mut bytes = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&ciphertext);
        Ok(Sealed {
            bytes,
            key_id: self.current.id.clone(),
        })
    }

    /// Decrypts `bytes` stored in `column` of `provider`'s row under key `key_id`.
    ///
    /// # Errors
    /// [`CryptoError::UnknownKey`] when neither key has that id, [`CryptoError::Refused`] when
    /// authentication fails (tampering, or a ciphertext moved between rows or columns).
    pub fn open(
        &self,
        provider: &str,
        column: Column,
        key_id: &str,
        bytes: &[u8],
    ) -> Result<SecretString, CryptoError> {
        let key = [Some(&self.current), self.previous.as_ref()]
            .into_iter()
            .flatten()
            .find(|key| key.id == key_id)
            .ok_or_else(|| CryptoError::UnknownKey {
                provider: provider.to_owned(),
                column: column.as_str(),
                key_id: key_id.to_owned(),
            })?;
        let refused = || CryptoError::Refused {
            provider: provider.to_owned(),
            column: column.as_str(),
            key_id: key_id.to_owned(),
        };
        if bytes.len() < NONCE_LEN {
            return Err(refused());
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| refused())?;
        let aad = aad(provider, column);
        let plaintext = key
            .cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| refused())?;
        String::from_utf8(plaintext)
            .map(SecretString::from)
            .map_err(|_| CryptoError::NotText {
                provider: provider.to_owned(),
                column: column.as_str(),
            })
    }
}

fn aad(provider: &str, column: Column) -> String {
    format!("upkeep/oauth_tokens/{provider}/{}", column.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> Key {
        Key::new(&SecretBox::new(Box::new([byte; 32])))
    }

    fn secret(text: &str) -> SecretString {
        SecretString::from(text.to_owned())
    }

    #[test]
    fn a_sealed_value_opens_only_in_its_own_row_and_column() {
        let keyring = Keyring::new(key(1), None);
        let sealed = keyring
            .seal("crm", Column::RefreshToken, &secret("rt-123"))
            .unwrap();

        let opened = keyring
            .open("crm", Column::RefreshToken, &sealed.key_id, &sealed.bytes)
            .unwrap();
        assert_eq!(opened.expose_secret(), "rt-123");
        let other_row = keyring.open("erp", Column::RefreshToken, &sealed.key_id, &sealed.bytes);
        let other_column = keyring.open("crm", Column::AccessToken, &sealed.key_id, &sealed.bytes);
        for result in [other_row, other_column] {
            let error = result.expect_err("refused");
            assert!(matches!(error, CryptoError::Refused { .. }), "{error}");
            assert!(!error.to_string().contains("rt-123"));
        }
    }

    #[test]
    fn two_encryptions_of_one_value_differ_by_their_nonce() {
        let keyring = Keyring::new(key(1), None);
        let first = keyring
            .seal("crm", Column::AccessToken, &secret("at"))
            .unwrap();
        let second = keyring
            .seal("crm", Column::AccessToken, &secret("at"))
            .unwrap();
        assert_ne!(first.bytes[..NONCE_LEN], second.bytes[..NONCE_LEN]);
        assert_ne!(first.bytes, second.bytes);
    }

    #[test]
    fn the_previous_key_still_opens_old_rows_and_ids_name_keys() {
        let old = Keyring::new(key(1), None);
        let sealed = old.seal("crm", Column::AccessToken, &secret("at")).unwrap();
        let rotating = Keyring::new(key(2), Some(key(1)));
        let new_only = Keyring::new(key(2), None);

        assert_ne!(key(1).id(), key(2).id());
        assert_eq!(key(1).id(), key(1).id());
        assert!(
            rotating
                .open("crm", Column::AccessToken, &sealed.key_id, &sealed.bytes)
                .is_ok()
        );
        let error = new_only
            .open("crm", Column::AccessToken, &sealed.key_id, &sealed.bytes)
            .expect_err("unknown key");
        assert!(matches!(error, CryptoError::UnknownKey { .. }));
    }
}
