//! License keys as admins and clients send them: normalised or refused, and masked,
//! never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(key) = leasehold_core::keys::normalize_key(text) {
        assert_eq!(leasehold_core::keys::normalize_key(&key), Ok(key.clone()));
        let masked = leasehold_core::keys::mask_key(&key);
        assert_eq!(masked.chars().count(), key.chars().count());
    }
});
