//! The SDK is linked into vendors' applications: it carries only what a client needs.
//! This reads the dependency tree cargo resolves for the SDK alone (as a vendor's
//! build would) and holds it to its budget.

use std::collections::BTreeSet;
use std::process::Command;

/// Crates in the SDK's normal dependency tree, itself included.
const BUDGET: usize = 110;

/// Server-side crates that must never reach a vendor's application.
const SERVER_ONLY: &[&str] = &[
    "argon2",
    "axum",
    "chacha20poly1305",
    "hmac",
    "lettre",
    "rusqlite",
    "sqlx",
    "sqlx-core",
    "redis",
];

#[test]
fn the_sdk_links_no_server_crates_and_stays_within_its_budget() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "-p",
            "leasehold-client",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8_lossy(&output.stdout);
    let crates: BTreeSet<(String, String)> = tree
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            Some((words.next()?.to_string(), words.next()?.to_string()))
        })
        .collect();
    let names: BTreeSet<&str> = crates.iter().map(|(name, _)| name.as_str()).collect();
    for server_only in SERVER_ONLY {
        assert!(
            !names.contains(server_only),
            "{server_only} reached the SDK's tree"
        );
    }
    assert!(
        crates.len() <= BUDGET,
        "the SDK pulls {} crates (budget {BUDGET}): {names:?}",
        crates.len()
    );
}
