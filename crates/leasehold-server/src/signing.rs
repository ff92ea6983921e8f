//! Ed25519 signing keys: one per workspace (made on first use, stored encrypted) and one
//! for the server, which signs answers that belong to no workspace (an unknown key).

use crate::error::ApiError;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use leasehold_core::secrets::MasterKey;
use leasehold_store::Store;
use rand::RngCore;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

const SERVER_KEY: &str = "server_signing_key";

pub struct Signers {
    master: MasterKey,
    server: Arc<SigningKey>,
    workspaces: RwLock<HashMap<String, Arc<SigningKey>>>,
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
        Ok(Signers {
            master,
            server: Arc::new(server),
            workspaces: RwLock::new(HashMap::new()),
        })
    }

    pub fn server(&self) -> Arc<SigningKey> {
        self.server.clone()
    }

    /// The workspace's key, made and stored on first use, then cached.
    pub async fn workspace(
        &self,
        store: &dyn Store,
        workspace_id: &str,
    ) -> Result<Arc<SigningKey>, ApiError> {
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
        let key = Arc::new(unseal(&self.master, &sealed).map_err(|error| {
            tracing::error!(%error, workspace_id, "the workspace signing key does not decrypt");
            ApiError::internal()
        })?);
        if let Ok(mut map) = self.workspaces.write() {
            map.insert(workspace_id.to_string(), key.clone());
        }
        Ok(key)
    }
}

/// `ed25519=<base64 signature>` of `bytes`.
pub fn signature_header(key: &SigningKey, bytes: &[u8]) -> String {
    format!(
        "ed25519={}",
        base64::engine::general_purpose::STANDARD.encode(key.sign(bytes).to_bytes())
    )
}

pub fn public_key_base64(key: &SigningKey) -> String {
    base64::engine::general_purpose::STANDARD.encode(key.verifying_key().to_bytes())
}
