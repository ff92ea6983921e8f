//! The offline license file's parser and verifier: any input is refused or verified,
//! never a panic, and without the signing key nothing verifies.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]).verifying_key();
    // A fixed instant: the verifier's clock, never compared with today.
    let now = chrono::DateTime::from_timestamp(2_000_000_000, 0).unwrap_or_default();
    let verified = leasehold_client::verify_license_file(text, &key, Some("machine"), now);
    assert!(verified.is_err(), "a file no one signed verified");
});
