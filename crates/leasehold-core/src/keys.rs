//! License key format: generation, normalisation and masking.

/// Crockford's base32 alphabet (no I, L, O, U).
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const GROUPS: usize = 5;
const GROUP_LEN: usize = 5;
/// The longest key an admin may enter.
pub const MAX_KEY_LEN: usize = 256;

/// The random bytes a key is made of: one per symbol, of which the low 5 bits count.
pub const KEY_RANDOM_BYTES: usize = GROUPS * GROUP_LEN;

/// A key `XXXXX-XXXXX-XXXXX-XXXXX-XXXXX` from 25 random bytes: 25 Crockford symbols,
/// 125 random bits. The caller draws the bytes from the OS (the domain does no I/O).
pub fn key_from_random(random: &[u8; KEY_RANDOM_BYTES]) -> String {
    let mut key = String::with_capacity(GROUPS * (GROUP_LEN + 1));
    for (i, byte) in random.iter().enumerate() {
        if i > 0 && i % GROUP_LEN == 0 {
            key.push('-');
        }
        key.push(CROCKFORD[usize::from(byte & 31)] as char);
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
        let mut random = [0u8; KEY_RANDOM_BYTES];
        for (i, b) in random.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37).wrapping_add(200);
        }
        let key = key_from_random(&random);
        assert_eq!(key.len(), 29);
        let groups: Vec<&str> = key.split('-').collect();
        assert_eq!(groups.len(), 5);
        assert!(groups
            .iter()
            .all(|g| g.len() == 5 && g.bytes().all(|b| CROCKFORD.contains(&b))));
        // Only the low five bits of each byte count.
        assert_eq!(key_from_random(&random.map(|b| b | 0xE0)), key);
        assert_eq!(
            key_from_random(&[0; KEY_RANDOM_BYTES]),
            "00000-00000-00000-00000-00000"
        );
        assert_eq!(
            key_from_random(&[31; KEY_RANDOM_BYTES]),
            "ZZZZZ-ZZZZZ-ZZZZZ-ZZZZZ-ZZZZZ"
        );
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
