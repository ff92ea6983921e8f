//! Ed25519 signing keys: one per workspace (made on first use, stored encrypted) and one
//! for the server, which signs answers that belong to no workspace (an unknown key).

use crate::error::ApiError;
use crate::secrets::MasterKey;
use axum::body::Bytes;
use axum::http::HeaderValue;
use base64::Engine;
use ed25519_dalek::{Signature, Signer as _, SigningKey};
use leasehold_proto::{signed_message, ANSWER_CONTEXT, FILE_CONTEXT};
use leasehold_store::Store;
use rand::RngCore;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

const SERVER_KEY: &str = "server_signing_key";

/// Bodies up to this size have their signatures remembered (a heartbeat's answer, with
/// what it echoes of its request, is about 130 bytes, a checkin's 110; checkouts, larger
/// and never the same twice, pass by without taking the lock) ...
const REMEMBERED_BODY_BYTES: usize = 160;
/// ... and so do larger ones up to this size that the handler said will repeat
/// ([`Repeats`]: a validation answers the same body for a license all through a second).
const REPEATING_BODY_BYTES: usize = 2048;
/// Each kind (small bodies, repeating ones) remembers up to about this many bytes for all
/// keys together, then forgets all of its kind at once: a crowd of validations of many
/// licenses churns only its own kind, never the heartbeats' and checkins' signatures.
const MEMO_BYTES: usize = 1 << 20;
/// What one remembered signature costs besides its body: the header value and the map.
const MEMO_ENTRY_BYTES: usize = 160;

/// Whether an answer's body is expected again soon, so that its signature is worth
/// remembering even when it is not small. A response extension, set by the handler.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Repeats {
    /// Only small bodies are remembered (heartbeats and checkins repeat; checkouts never).
    #[default]
    Seldom,
    /// A validation: one license's answer is the same body all through a second.
    Often,
}

/// The signatures of recent answer bodies: small ones, and larger ones said to repeat.
#[derive(Default)]
struct Memo {
    small: Remembered,
    repeating: Remembered,
}

/// Which part of the memo remembers a body's signature.
#[derive(Clone, Copy)]
enum Kind {
    Small,
    Repeating,
}

impl Kind {
    /// `None`: the body's signature is not worth remembering.
    fn of(bytes: &[u8], repeats: Repeats) -> Option<Kind> {
        if bytes.len() <= REMEMBERED_BODY_BYTES {
            Some(Kind::Small)
        } else if repeats == Repeats::Often && bytes.len() <= REPEATING_BODY_BYTES {
            Some(Kind::Repeating)
        } else {
            None
        }
    }
}

impl Memo {
    fn part(&mut self, kind: Kind) -> &mut Remembered {
        match kind {
            Kind::Small => &mut self.small,
            Kind::Repeating => &mut self.repeating,
        }
    }
}

/// Signatures by signing key (its public half) and body.
#[derive(Default)]
struct Remembered {
    by_key: HashMap<[u8; 32], HashMap<Bytes, HeaderValue>>,
    bytes: usize,
}

impl Remembered {
    fn get(&self, public: &[u8; 32], bytes: &[u8]) -> Option<HeaderValue> {
        self.by_key.get(public)?.get(bytes).cloned()
    }

    fn insert(&mut self, public: [u8; 32], bytes: &[u8], value: HeaderValue) {
        let cost = bytes.len() + MEMO_ENTRY_BYTES;
        if self.bytes + cost > MEMO_BYTES {
            *self = Remembered::default();
        }
        let added = self
            .by_key
            .entry(public)
            .or_default()
            .insert(Bytes::copy_from_slice(bytes), value)
            .is_none();
        if added {
            self.bytes += cost;
        }
    }
}

/// A signing key that remembers the signatures of the bodies it signed last that are
/// likely to be answered again: small ones, and validations.
/// Ed25519 is deterministic (one key and one message give one signature), so a body
/// answered again gets exactly the signature signing would give, without the ~20 µs of
/// signing: heartbeats of the same millisecond (their answer is only `expires_at`),
/// checkins, and a license's validations within one second. The design's "once per
/// distinct answer body".
pub struct Signer {
    key: SigningKey,
    public: [u8; 32],
    /// Shared by every key of the server, so memory stays bounded however many
    /// workspaces answer.
    memo: Arc<Mutex<Memo>>,
}

impl Signer {
    fn new(key: SigningKey, memo: Arc<Mutex<Memo>>) -> Signer {
        let public = key.verifying_key().to_bytes();
        Signer { key, public, memo }
    }

    /// The signature of a license file's payload (over `FILE_CONTEXT` and the payload),
    /// never remembered.
    pub fn sign_file(&self, payload: &[u8]) -> Signature {
        self.key.sign(&signed_message(FILE_CONTEXT, payload))
    }

    /// The public half, as the public-key endpoint answers it.
    pub fn public_key_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.public)
    }

    /// The public half in hex, as Keygen clients are configured with it.
    pub fn public_key_hex(&self) -> String {
        self.public.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A plain Ed25519 signature of `message`, without Leasehold's domain separation:
    /// what Keygen's formats sign (their own prefixes separate them), never remembered.
    pub fn sign_keygen(&self, message: &[u8]) -> Signature {
        self.key.sign(message)
    }

    #[cfg(test)]
    pub(crate) fn from_seed(seed: [u8; 32]) -> Signer {
        Signer::new(SigningKey::from_bytes(&seed), Arc::default())
    }

    /// The `Leasehold-Signature` value for these exact body bytes:
    /// `ed25519=<base64 signature>` of `ANSWER_CONTEXT` and the body. `repeats`: the body
    /// is expected again soon.
    pub fn header(&self, bytes: &[u8], repeats: Repeats) -> Option<HeaderValue> {
        let kind = Kind::of(bytes, repeats);
        if let Some(kind) = kind {
            let known = self
                .memo
                .lock()
                .ok()
                .and_then(|mut memo| memo.part(kind).get(&self.public, bytes));
            if known.is_some() {
                return known;
            }
        }
        let value = HeaderValue::from_str(&signature_header(&self.key, bytes)).ok()?;
        if let (Some(kind), Ok(mut memo)) = (kind, self.memo.lock()) {
            memo.part(kind).insert(self.public, bytes, value.clone());
        }
        Some(value)
    }
}

pub struct Signers {
    master: MasterKey,
    server: Arc<Signer>,
    workspaces: RwLock<HashMap<String, Arc<Signer>>>,
    memo: Arc<Mutex<Memo>>,
}

fn new_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    seed
}

fn unseal(master: &MasterKey, sealed: &[u8]) -> anyhow::Result<SigningKey> {
    let seed = master.decrypt(sealed)?;
    let seed: [u8; 32] = seed
        .as_slice()
        .try_into()
        .map_err(|_| anyhow::anyhow!("a stored signing key is not 32 bytes"))?;
    Ok(SigningKey::from_bytes(&seed))
}

impl Signers {
    pub async fn load(store: &dyn Store, master: MasterKey) -> anyhow::Result<Signers> {
        let candidate =
            base64::engine::general_purpose::STANDARD.encode(master.encrypt(&new_seed()));
        // Kept per master key: a store started with `--force` under another master key
        // gets its own server key rather than one it cannot decrypt.
        let name = format!("{SERVER_KEY}:{}", master.check_value());
        let stored = store.meta_get_or_put(&name, &candidate).await?;
        let sealed = base64::engine::general_purpose::STANDARD.decode(stored)?;
        let server = unseal(&master, &sealed)?;
        let memo = Arc::new(Mutex::new(Memo::default()));
        Ok(Signers {
            master,
            server: Arc::new(Signer::new(server, memo.clone())),
            workspaces: RwLock::new(HashMap::new()),
            memo,
        })
    }

    /// Whether some key remembers its signature of these exact body bytes (for tests of
    /// which answers are signed once).
    pub fn remembers(&self, bytes: &[u8]) -> bool {
        self.memo.lock().is_ok_and(|memo| {
            [&memo.small, &memo.repeating].iter().any(|part| {
                part.by_key
                    .values()
                    .any(|signed| signed.contains_key(bytes))
            })
        })
    }

    pub fn server(&self) -> Arc<Signer> {
        self.server.clone()
    }

    /// The workspace's key, made and stored on first use, then cached.
    pub async fn workspace(
        &self,
        store: &dyn Store,
        workspace_id: &str,
    ) -> Result<Arc<Signer>, ApiError> {
        if let Some(key) = self
            .workspaces
            .read()
            .ok()
            .and_then(|m| m.get(workspace_id).cloned())
        {
            return Ok(key);
        }
        let sealed = store
            .workspace_signing_key(workspace_id, self.master.encrypt(&new_seed()))
            .await?;
        let key = unseal(&self.master, &sealed).map_err(|error| {
            tracing::error!(%error, workspace_id, "the workspace signing key does not decrypt");
            ApiError::internal()
        })?;
        let key = Arc::new(Signer::new(key, self.memo.clone()));
        if let Ok(mut map) = self.workspaces.write() {
            map.insert(workspace_id.to_string(), key.clone());
        }
        Ok(key)
    }
}

/// `ed25519=<base64 signature>` of an answer's body, domain-separated.
fn signature_header(key: &SigningKey, bytes: &[u8]) -> String {
    let signature = key.sign(&signed_message(ANSWER_CONTEXT, bytes));
    format!(
        "ed25519={}",
        base64::engine::general_purpose::STANDARD.encode(signature.to_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::Verifier;

    fn signers(n: usize) -> Vec<Signer> {
        let memo = Arc::new(Mutex::new(Memo::default()));
        (0..n)
            .map(|_| Signer::new(SigningKey::from_bytes(&new_seed()), memo.clone()))
            .collect()
    }

    /// The signature a header carries, checked against `key`'s public half.
    fn verifies(key: &Signer, bytes: &[u8], header: &HeaderValue) -> bool {
        let Some(b64) = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("ed25519="))
        else {
            return false;
        };
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64) else {
            return false;
        };
        let Ok(signature) = Signature::from_slice(&raw) else {
            return false;
        };
        key.key
            .verifying_key()
            .verify(&signed_message(ANSWER_CONTEXT, bytes), &signature)
            .is_ok()
    }

    fn remembered(key: &Signer, bytes: &[u8]) -> Option<HeaderValue> {
        let mut memo = key.memo.lock().unwrap();
        let kind = Kind::of(bytes, Repeats::Often)?;
        memo.part(kind).get(&key.public, bytes)
    }

    #[test]
    fn a_body_signed_again_gets_the_remembered_signature() {
        let key = signers(1).remove(0);
        // fixed date: a body to sign, never compared with today
        let body = br#"{"expires_at":"2026-11-24T04:00:00.000Z"}"#;
        let first = key.header(body, Repeats::Seldom).unwrap();
        assert_eq!(first, signature_header(&key.key, body).as_str());
        assert!(verifies(&key, body, &first));
        assert_eq!(remembered(&key, body), Some(first.clone()));
        // What is remembered is what is answered, without signing again: a planted
        // value comes back.
        let planted = HeaderValue::from_static("ed25519=planted");
        key.memo
            .lock()
            .unwrap()
            .small
            .insert(key.public, body, planted.clone());
        assert_eq!(key.header(body, Repeats::Seldom).unwrap(), planted);
        // fixed date: a body to sign, never compared with today
        let other = br#"{"expires_at":"2026-11-24T04:00:00.001Z"}"#;
        let other_header = key.header(other, Repeats::Seldom).unwrap();
        assert!(verifies(&key, other, &other_header));
        assert!(!verifies(&key, other, &first));
    }

    #[test]
    fn each_key_is_answered_only_with_its_own_signatures() {
        let keys = signers(2);
        let body = br#"{"released":true}"#;
        let by_a = keys[0].header(body, Repeats::Seldom).unwrap();
        let by_b = keys[1].header(body, Repeats::Seldom).unwrap();
        assert_ne!(by_a, by_b);
        assert!(verifies(&keys[0], body, &by_a) && verifies(&keys[1], body, &by_b));
        assert!(!verifies(&keys[1], body, &by_a));
        assert_eq!(keys[1].header(body, Repeats::Seldom).unwrap(), by_b);
        assert_eq!(keys[0].header(body, Repeats::Seldom).unwrap(), by_a);
    }

    /// Domain separation (DESIGN §11): an answer's signature is no file signature, nor a
    /// signature of the bare bytes, and a file's is no answer's.
    #[test]
    fn an_answers_signature_never_passes_for_a_files_and_back() {
        let key = signers(1).remove(0);
        let bytes = br#"{"valid":true}"#;
        let public = key.key.verifying_key();
        let answer = key.header(bytes, Repeats::Seldom).unwrap();
        assert!(verifies(&key, bytes, &answer));
        let raw = |header: &HeaderValue| {
            let b64 = header.to_str().unwrap().strip_prefix("ed25519=").unwrap();
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap();
            Signature::from_slice(&raw).unwrap()
        };
        assert!(public.verify(bytes, &raw(&answer)).is_err());
        assert!(public
            .verify(&signed_message(FILE_CONTEXT, bytes), &raw(&answer))
            .is_err());
        let file = key.sign_file(bytes);
        assert!(public
            .verify(&signed_message(FILE_CONTEXT, bytes), &file)
            .is_ok());
        assert!(public
            .verify(&signed_message(ANSWER_CONTEXT, bytes), &file)
            .is_err());
    }

    #[test]
    fn large_bodies_are_signed_but_not_remembered_and_the_memo_stays_bounded() {
        let keys = signers(3);
        let large = vec![b'x'; REMEMBERED_BODY_BYTES + 1];
        assert!(verifies(
            &keys[0],
            &large,
            &keys[0].header(&large, Repeats::Seldom).unwrap()
        ));
        assert!(remembered(&keys[0], &large).is_none());
        // A body said to repeat (a validation's) is remembered up to its own limit.
        let header = keys[0].header(&large, Repeats::Often).unwrap();
        assert!(verifies(&keys[0], &large, &header));
        assert_eq!(remembered(&keys[0], &large), Some(header));
        let too_large = vec![b'x'; REPEATING_BODY_BYTES + 1];
        let header = keys[0].header(&too_large, Repeats::Often).unwrap();
        assert!(verifies(&keys[0], &too_large, &header));
        assert!(remembered(&keys[0], &too_large).is_none());
        for i in 0..6_000 {
            let key = &keys[i % keys.len()];
            let (body, repeats) = if i % 2 == 0 {
                let pad = "p".repeat(i % 50);
                (format!("{{\"n\":{i},\"pad\":\"{pad}\"}}"), Repeats::Seldom)
            } else {
                let pad = "v".repeat(100 + i % 900);
                (format!("{{\"n\":{i},\"pad\":\"{pad}\"}}"), Repeats::Often)
            };
            assert!(verifies(
                key,
                body.as_bytes(),
                &key.header(body.as_bytes(), repeats).unwrap()
            ));
            let memo = key.memo.lock().unwrap();
            for part in [&memo.small, &memo.repeating] {
                assert!(part.bytes <= MEMO_BYTES);
                let kept: usize = part
                    .by_key
                    .values()
                    .flat_map(|signed| signed.keys())
                    .map(|body| body.len() + MEMO_ENTRY_BYTES)
                    .sum();
                assert_eq!(kept, part.bytes);
            }
        }
    }

    #[test]
    fn a_crowd_of_validations_does_not_forget_the_small_bodies_signatures() {
        let key = signers(1).remove(0);
        // fixed date: a body to sign, never compared with today
        let heartbeat = br#"{"expires_at":"2026-11-25T04:00:00.000Z"}"#;
        let signed = key.header(heartbeat, Repeats::Seldom).unwrap();
        // Many licenses' validations: several times what their part of the memo holds.
        let validation = |n: usize| format!("{{\"license\":{n},\"pad\":\"{}\"}}", "v".repeat(500));
        let crowd = 4 * MEMO_BYTES / (validation(0).len() + MEMO_ENTRY_BYTES);
        for n in 0..crowd {
            key.header(validation(n).as_bytes(), Repeats::Often)
                .unwrap();
        }
        assert_eq!(remembered(&key, heartbeat), Some(signed));
        let last = validation(crowd - 1);
        assert!(remembered(&key, last.as_bytes()).is_some());
    }
}
