//! Offline license files: verified with the workspace's public key alone.

use base64::Engine;
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use leasehold_proto::{
    signed_message, LicenseFile, LicenseFilePayload, FILE_CONTEXT, LICENSE_FILE_FORMAT,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LicenseFileError {
    #[error("not a Leasehold license file: {0}")]
    Malformed(String),
    #[error("the signature does not verify with this public key")]
    BadSignature,
    #[error("the file is not valid before {0}")]
    NotYetValid(DateTime<Utc>),
    #[error("the file expired at {0}")]
    Expired(DateTime<Utc>),
    #[error("the file is for another machine")]
    WrongMachine,
}

/// Checks a license file's signature, its time window at `now`, and (when given) that it
/// was issued for `fingerprint`. Answers what it vouches for.
pub fn verify_license_file(
    text: &str,
    public_key: &VerifyingKey,
    fingerprint: Option<&str>,
    now: DateTime<Utc>,
) -> Result<LicenseFilePayload, LicenseFileError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let file: LicenseFile =
        serde_json::from_str(text).map_err(|e| LicenseFileError::Malformed(e.to_string()))?;
    if file.format != LICENSE_FILE_FORMAT || file.algorithm != "ed25519" {
        return Err(LicenseFileError::Malformed(format!(
            "unknown format {:?}",
            file.format
        )));
    }
    let payload = b64
        .decode(&file.payload)
        .map_err(|_| LicenseFileError::Malformed("payload is not base64".into()))?;
    let signature = b64
        .decode(&file.signature)
        .ok()
        .and_then(|s| Signature::from_slice(&s).ok())
        .ok_or(LicenseFileError::BadSignature)?;
    public_key
        .verify(&signed_message(FILE_CONTEXT, &payload), &signature)
        .map_err(|_| LicenseFileError::BadSignature)?;
    let payload: LicenseFilePayload =
        serde_json::from_slice(&payload).map_err(|e| LicenseFileError::Malformed(e.to_string()))?;
    // Allow a minute of clock skew at issue time.
    if now + chrono::Duration::seconds(60) < payload.issued_at {
        return Err(LicenseFileError::NotYetValid(payload.issued_at));
    }
    if now > payload.valid_until {
        return Err(LicenseFileError::Expired(payload.valid_until));
    }
    if let Some(fingerprint) = fingerprint {
        if fingerprint != payload.fingerprint {
            return Err(LicenseFileError::WrongMachine);
        }
    }
    Ok(payload)
}
