//! Property tests (proptest) of the offline license file's parser and verifier: any text
//! is refused without a panic, and a signed file verifies only as it was signed.
#![allow(clippy::unwrap_used)]

use base64::Engine;
use chrono::{Duration, TimeZone, Utc};
use ed25519_dalek::{Signer, SigningKey};
use leasehold_client::verify_license_file;
use leasehold_core::{LicenseStatus, LicenseType, SeatModel};
use leasehold_proto::{
    signed_message, ClientLicense, LicenseFile, LicenseFilePayload, FILE_CONTEXT,
    LICENSE_FILE_FORMAT,
};
use proptest::prelude::*;

fn key() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32])
}

/// A file signed by `key()`, issued at `issued` (seconds) for `ttl` seconds.
fn signed_file(issued: i64, ttl: i64, fingerprint: &str) -> String {
    let issued_at = Utc.timestamp_opt(issued, 0).unwrap();
    let payload = LicenseFilePayload {
        license: ClientLicense {
            id: "lic".into(),
            license_type: LicenseType::Subscription,
            status: LicenseStatus::Active,
            seat_model: SeatModel::Dedicated,
            seats_total: 1,
            seats_used: 1,
            expires_on: None,
            maintenance_expires_on: None,
            version: None,
            licensed_to: "Acme".into(),
            lease_ttl_s: 900,
            heartbeat_interval_s: 300,
        },
        fingerprint: fingerprint.into(),
        issued_at,
        valid_until: issued_at + Duration::seconds(ttl),
        kind: None,
        borrow_id: None,
        os_user: None,
    };
    let bytes = serde_json::to_vec(&payload).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    serde_json::to_string(&LicenseFile {
        format: LICENSE_FILE_FORMAT.into(),
        algorithm: "ed25519".into(),
        payload: b64.encode(&bytes),
        signature: b64.encode(key().sign(&signed_message(FILE_CONTEXT, &bytes)).to_bytes()),
    })
    .unwrap()
}

proptest! {
    #[test]
    fn any_text_is_refused_without_a_panic(text in "\\PC{0,400}") {
        let now = Utc.timestamp_opt(2_000_000_000, 0).unwrap();
        prop_assert!(verify_license_file(&text, &key().verifying_key(), None, now).is_err());
    }

    #[test]
    fn a_signed_file_verifies_within_its_window_for_its_machine_only(
        issued in 1_000_000_000i64..3_000_000_000,
        ttl in 60i64..100_000_000,
        at in 0i64..100_000_000,
        fingerprint in "[a-z0-9-]{1,40}",
    ) {
        let text = signed_file(issued, ttl, &fingerprint);
        let public = key().verifying_key();
        let now = Utc.timestamp_opt(issued + at, 0).unwrap();
        let verified = verify_license_file(&text, &public, Some(&fingerprint), now);
        prop_assert_eq!(verified.is_ok(), at <= ttl);
        let other = verify_license_file(&text, &public, Some("another-machine"), now);
        prop_assert!(other.is_err());
    }

    #[test]
    fn a_changed_byte_of_a_signed_file_fails_it(position in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let text = signed_file(1_700_000_000, 3600, "m");
        let mut file: LicenseFile = serde_json::from_str(&text).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut payload = b64.decode(&file.payload).unwrap();
        let i = position.index(payload.len());
        prop_assume!(payload[i] != byte);
        payload[i] = byte;
        file.payload = b64.encode(&payload);
        let tampered = serde_json::to_string(&file).unwrap();
        let now = Utc.timestamp_opt(1_700_000_100, 0).unwrap();
        prop_assert!(verify_license_file(&tampered, &key().verifying_key(), None, now).is_err());
    }
}
