//! The master key: encrypts secrets at rest (XChaCha20-Poly1305) and derives the
//! keyed hashes by which license keys and tokens are found without storing them.

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

const NONCE_LEN: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the master key must be 32 bytes, base64 or hex encoded")]
    BadMasterKey,
    #[error("a stored secret could not be decrypted with this master key")]
    Decrypt,
}

/// The server's master key. Its bytes never appear in `Debug` output or logs.
#[derive(Clone)]
pub struct MasterKey {
    bytes: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    pub fn generate() -> MasterKey {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(bytes.as_mut());
        MasterKey { bytes }
    }

    /// Parses 32 bytes written as base64 (standard or URL-safe) or as 64 hex digits.
    pub fn parse(text: &str) -> Result<MasterKey, SecretError> {
        let text = text.trim();
        let decoded = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32)
                .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|_| SecretError::BadMasterKey)?
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text))
                .map_err(|_| SecretError::BadMasterKey)?
        };
        let decoded = Zeroizing::new(decoded);
        let bytes: [u8; 32] = decoded
            .as_slice()
            .try_into()
            .map_err(|_| SecretError::BadMasterKey)?;
        Ok(MasterKey {
            bytes: Zeroizing::new(bytes),
        })
    }

    /// The key as base64, for writing the key file once.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(self.bytes.as_ref()))
    }

    fn subkey(&self, purpose: &str) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.bytes.as_ref())
            .expect("HMAC accepts keys of any length");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Encrypts a secret; the output carries its random nonce.
    pub fn encrypt(&self, plaintext: &[u8]) -> Vec<u8> {
        let cipher = XChaCha20Poly1305::new(&self.subkey("leasehold/encrypt/v1").into());
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = cipher
            .encrypt(XNonce::from_slice(&nonce), plaintext)
            .expect("XChaCha20-Poly1305 encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    pub fn decrypt(&self, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SecretError> {
        if sealed.len() < NONCE_LEN {
            return Err(SecretError::Decrypt);
        }
        let cipher = XChaCha20Poly1305::new(&self.subkey("leasehold/encrypt/v1").into());
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        cipher
            .decrypt(XNonce::from_slice(nonce), body)
            .map(Zeroizing::new)
            .map_err(|_| SecretError::Decrypt)
    }

    pub fn decrypt_string(&self, sealed: &[u8]) -> Result<String, SecretError> {
        let bytes = self.decrypt(sealed)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| SecretError::Decrypt)
    }

    /// The keyed hash a license key is looked up by (hex HMAC-SHA256).
    pub fn key_hash(&self, key: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.subkey("leasehold/key-hash/v1"))
            .expect("HMAC accepts keys of any length");
        mac.update(key.as_bytes());
        hex(&mac.finalize().into_bytes())
    }

    /// A value stored beside the data that tells whether this is the key it was written with.
    pub fn check_value(&self) -> String {
        hex(&self.subkey("leasehold/check/v1")[..16])
    }
}

/// A new license key from the OS's randomness (the format is the domain's, in `keys`).
pub fn generate_license_key() -> String {
    let mut random = [0u8; leasehold_core::keys::KEY_RANDOM_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut random);
    leasehold_core::keys::key_from_random(&random)
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

/// Compares two secrets' digests in constant time.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encryption_round_trips_and_detects_another_key() {
        let key = MasterKey::generate();
        let sealed = key.encrypt(b"ABCDE-12345");
        assert_eq!(key.decrypt_string(&sealed).unwrap(), "ABCDE-12345");
        assert!(MasterKey::generate().decrypt(&sealed).is_err());
        assert_ne!(key.encrypt(b"x"), key.encrypt(b"x"));
    }

    #[test]
    fn master_key_parses_from_its_base64_and_hex() {
        let key = MasterKey::generate();
        let again = MasterKey::parse(&key.to_base64()).unwrap();
        assert_eq!(again.key_hash("K"), key.key_hash("K"));
        assert!(MasterKey::parse(&"ab".repeat(32)).is_ok());
        assert!(MasterKey::parse("short").is_err());
        assert!(!format!("{key:?}").contains(&*key.to_base64()));
    }
}
