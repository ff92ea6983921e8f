//! Keygen's response signatures: what a Keygen client checks on every answer.
//!
//! The signed text is four lines, joined with `\n` and no trailing newline:
//! `(request-target): <method> <path?query>`, `host: <host[:port]>`, `date: <date>` and
//! `digest: sha-256=<base64 SHA-256 of the body>`, where the request target and host are
//! the ones the client asked for (the `/keygen` prefix included).

use crate::signing::Signer;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use base64::Engine;
use sha2::{Digest, Sha256};

/// What the client asked for, as it will rebuild it to check the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    /// Lowercase.
    pub(super) method: String,
    /// The path and query, raw as sent.
    pub(super) path_and_query: String,
    /// The `Host` header verbatim (its port included).
    pub(super) host: String,
}

/// `sha-256=<base64 of SHA-256(body)>`.
pub(super) fn digest(body: &[u8]) -> String {
    let hash = Sha256::digest(body);
    format!(
        "sha-256={}",
        base64::engine::general_purpose::STANDARD.encode(hash)
    )
}

/// A date as HTTP writes it (RFC 7231), e.g. `Tue, 01 Jan 2030 00:00:00 GMT`.
pub(super) fn http_date(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

pub(super) fn signing_string(target: &Target, date: &str, digest: &str) -> String {
    format!(
        "(request-target): {} {}\nhost: {}\ndate: {date}\ndigest: {digest}",
        target.method, target.path_and_query, target.host
    )
}

/// The `Keygen-Signature` value.
pub(super) fn signature(signer: &Signer, key_id: &str, signed: &str) -> String {
    let signature = signer.sign_keygen(signed.as_bytes());
    format!(
        "keyid=\"{key_id}\", algorithm=\"ed25519\", signature=\"{}\", headers=\"(request-target) host date digest\"",
        base64::engine::general_purpose::STANDARD.encode(signature.to_bytes())
    )
}

/// Adds the signature headers to an answer with this body: `Date` and `Keygen-Date`,
/// `Digest` and `Keygen-Digest` (clients read one or the other), `Keygen-Signature`
/// and `Keygen-Version`.
pub(super) fn sign_headers(
    headers: &mut HeaderMap,
    signer: &Signer,
    key_id: &str,
    target: &Target,
    body: &[u8],
    now: chrono::DateTime<chrono::Utc>,
) {
    let date = http_date(now);
    let digest = digest(body);
    let signature = signature(signer, key_id, &signing_string(target, &date, &digest));
    let mut put = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    put("date", &date);
    put("keygen-date", &date);
    put("digest", &digest);
    put("keygen-digest", &digest);
    put("keygen-signature", &signature);
    put("keygen-version", "1.8");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference's test vector (shared/refs/keygen-rs-0.14.md §1.4): a fixed key,
    /// date, body and request give exactly this signature, so the signed text can't drift.
    #[test]
    fn the_signature_matches_keygens_test_vector() {
        let seed: [u8; 32] = std::array::from_fn(|i| i as u8);
        let signer = Signer::from_seed(seed);
        assert_eq!(
            signer.public_key_hex(),
            "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
        );
        let body = br#"{"data":null,"meta":{"ts":"2030-01-01T00:00:00Z","valid":false,"detail":"does not exist","code":"NOT_FOUND","scope":{}}}"#;
        let digest = digest(body);
        assert_eq!(
            digest,
            "sha-256=U2wLsxbJtDZSDEFz3/jWDmigAGQzR43aWGbkTLaJAts="
        );
        // A fixed date: the vector's, never compared with today.
        let at = chrono::DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")
            .unwrap()
            .to_utc();
        let date = http_date(at);
        assert_eq!(date, "Tue, 01 Jan 2030 00:00:00 GMT");
        let target = Target {
            method: "post".into(),
            path_and_query: "/keygen/v1/licenses/actions/validate-key".into(),
            host: "127.0.0.1:8080".into(),
        };
        let signed = signing_string(&target, &date, &digest);
        assert!(signed.starts_with(
            "(request-target): post /keygen/v1/licenses/actions/validate-key\nhost: 127.0.0.1:8080\n"
        ));
        assert_eq!(
            signature(&signer, "ws-1", &signed),
            "keyid=\"ws-1\", algorithm=\"ed25519\", signature=\"raltxcEN+mcV5Ay9aQc2XYOA0w3+YjWas/vEQCByGqCG01C1gwiMEpYg1L48yQYtomLHd18T9NTdjXtJNgHoDg==\", headers=\"(request-target) host date digest\""
        );
        let mut headers = HeaderMap::new();
        sign_headers(&mut headers, &signer, "ws-1", &target, body, at);
        assert_eq!(headers["keygen-digest"], digest.as_str());
        assert_eq!(headers["digest"], digest.as_str());
        assert_eq!(headers["keygen-date"], "Tue, 01 Jan 2030 00:00:00 GMT");
    }

    #[test]
    fn an_empty_body_has_keygens_empty_digest() {
        assert_eq!(
            digest(b""),
            "sha-256=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
    }
}
