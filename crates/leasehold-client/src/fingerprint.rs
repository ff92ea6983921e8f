//! Machine identity: a stable machine id, hashed with a per-application salt so two
//! vendors' fingerprints of one machine cannot be linked, and the OS user.

use sha2::{Digest, Sha256};

/// The machine's stable id, from the first source that has one.
fn machine_id() -> String {
    for path in ["/etc/machine-id", "/var/lib/dbus/machine-id"] {
        if let Ok(id) = std::fs::read_to_string(path) {
            let id = id.trim();
            if !id.is_empty() {
                return id.to_string();
            }
        }
    }
    for var in ["COMPUTERNAME", "HOSTNAME"] {
        if let Ok(name) = std::env::var(var) {
            if !name.is_empty() {
                return name;
            }
        }
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-machine".into())
}

/// This machine's fingerprint for one application: hex SHA-256 of salt and machine id.
pub fn machine_fingerprint(app_salt: &str) -> String {
    let digest = Sha256::digest(format!("leasehold:{app_salt}:{}", machine_id()).as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The OS user running this process.
pub fn os_user() -> String {
    ["USER", "USERNAME", "LOGNAME"]
        .iter()
        .find_map(|var| std::env::var(var).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_stable_per_application_and_differ_between_them() {
        let a = machine_fingerprint("app-a");
        assert_eq!(a, machine_fingerprint("app-a"));
        assert_ne!(a, machine_fingerprint("app-b"));
        assert_eq!(a.len(), 64);
        assert!(
            !a.contains(&machine_id()),
            "the raw machine id is never sent"
        );
    }
}
