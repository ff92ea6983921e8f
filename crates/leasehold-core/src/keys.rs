//! License key format: generation, normalisation and masking.

use rand::Rng;

/// Crockford's base32 alphabet (no I, L, O, U).
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const GROUPS: usize = 5;
const GROUP_LEN: usize = 5;
/// The longest key an admin may enter.
pub const MAX_KEY_LEN: usize = 256;

/// A new key `XXXXX-XXXXX-XXXXX-XXXXX-XXXXX`: 25 Crockford symbols, 125 random bits.
pub fn generate_key() -> String {
    let mut rng = rand::rngs::OsRng;
    let mut key = String::with_capacity(GROUPS * (GROUP_LEN + 1));
    for group in 0..GROUPS {
        if group > 0 {
            key.push('-');
        }
        for _ in 0..GROUP_LEN {
            key.push(CROCKFORD[rng.gen_range(0..32)] as char);
        }
    }
    key
}

/// The canonical form a key is hashed and stored in: surrounding space trimmed.
/// Keys an admin enters are kept as typed otherwise (vendors' keys are case-sensitive
/// sometimes); generated keys are upper case already.
pub fn normalize_key(key: &str) -> Result<String, &'static str> {
    let key = key.trim();
    if key.is_empty() {
        return Err("must not be empty");
    }
    if key.len() > MAX_KEY_LEN {
        return Err("is longer than 256 characters");
    }
    if key.chars().any(|c| c.is_control()) {
        return Err("must not contain control characters");
    }
    Ok(key.to_string())
}

/// The key as everyone but a revealer sees it: every character but separators and the
/// last group (at most five characters, and never more than a third of the key) hidden.
pub fn mask_key(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    let shown = (chars.len() / 3).min(GROUP_LEN);
    let hidden_until = chars.len() - shown;
    chars
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            if i >= hidden_until || c == '-' {
                c
            } else {
                '•'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_five_groups_of_crockford_symbols() {
        let key = generate_key();
        assert_eq!(key.len(), 29);
        let groups: Vec<&str> = key.split('-').collect();
        assert_eq!(groups.len(), 5);
        assert!(groups
            .iter()
            .all(|g| g.len() == 5 && g.bytes().all(|b| CROCKFORD.contains(&b))));
        assert_ne!(generate_key(), key);
    }

    #[test]
    fn masking_shows_only_the_last_group() {
        assert_eq!(
            mask_key("ABCDE-FGHJK-MNPQR-STVWX-7K2QD"),
            "•••••-•••••-•••••-•••••-7K2QD"
        );
        assert_eq!(mask_key("abc"), "••c");
        assert_eq!(mask_key(""), "");
    }

    #[test]
    fn normalisation_trims_and_refuses_empty_keys() {
        assert_eq!(normalize_key("  KEY-1 ").as_deref(), Ok("KEY-1"));
        assert!(normalize_key("   ").is_err());
        assert!(normalize_key("a\u{0}b").is_err());
    }
}
