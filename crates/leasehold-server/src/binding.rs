//! Answers bound to their request (DESIGN §11). Every signed client answer, errors
//! included, says at the top level of its JSON body which request it answers: the
//! request's nonce, what was asked (`op`), the machine and OS user it named, and the
//! server's time. A signature over a body that said nothing of its request could be
//! replayed (a local server serving captured answers) or steered (a proxy rewriting the
//! fingerprint to a machine that holds a seat); the SDK refuses both by comparing the
//! binding with what it asked.

use crate::error::ApiError;
use axum::http::HeaderMap;
use chrono::SubsecRound;
use leasehold_proto::{check_nonce, Binding, NONCE_HEADER};

/// What was asked, one per client route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Validate,
    Activate,
    Deactivate,
    Lease,
    Heartbeat,
    Checkin,
    LicenseFile,
    LeaveQueue,
    Borrow,
    ReturnBorrow,
}

impl Op {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Op::Validate => "validate",
            Op::Activate => "activate",
            Op::Deactivate => "deactivate",
            Op::Lease => "lease",
            Op::Heartbeat => "heartbeat",
            Op::Checkin => "checkin",
            Op::LicenseFile => "license_file",
            Op::LeaveQueue => "leave_queue",
            Op::Borrow => "borrow",
            Op::ReturnBorrow => "return_borrow",
        }
    }
}

/// What an answer echoes of its request's own fields, found by its handler and handed to
/// the signing middleware as a response extension. An answer made before its handler ran
/// (a malformed body, a rate limit) echoes only the header's nonce.
#[derive(Clone, Debug, Default)]
pub(crate) struct Echo {
    /// The body's nonce (the header's is the middleware's to read).
    pub nonce: Option<String>,
    pub fingerprint: Option<String>,
    pub os_user: Option<String>,
}

impl Echo {
    pub(crate) fn new(
        nonce: Option<&str>,
        fingerprint: Option<&str>,
        os_user: Option<&str>,
    ) -> Echo {
        Echo {
            nonce: nonce.map(str::to_string),
            fingerprint: fingerprint.map(str::to_string),
            os_user: os_user.map(str::to_string),
        }
    }

    /// Refuses a malformed body nonce, before the request does anything.
    pub(crate) fn check(&self) -> Result<(), ApiError> {
        match &self.nonce {
            Some(nonce) => check_nonce(nonce).map_err(|m| ApiError::invalid("nonce", m)),
            None => Ok(()),
        }
    }
}

/// The request's `Leasehold-Nonce` header: `Ok(None)` without one, an error for a
/// malformed one.
pub(crate) fn header_nonce(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(NONCE_HEADER) else {
        return Ok(None);
    };
    let nonce = value
        .to_str()
        .map_err(|_| ApiError::invalid("nonce", "must be printable ASCII characters"))?;
    check_nonce(nonce).map_err(|m| ApiError::invalid("nonce", m))?;
    Ok(Some(nonce.to_string()))
}

/// The binding of an answer: the body's nonce, else the header's. `at` is whole seconds,
/// so that a validation's answer stays one body all through a second (its signature is
/// remembered) for clients that send no nonce.
pub(crate) fn binding(op: Op, echo: Echo, header_nonce: Option<String>) -> Binding {
    Binding {
        nonce: echo.nonce.or(header_nonce),
        op: op.as_str().to_string(),
        fingerprint: echo.fingerprint,
        os_user: echo.os_user,
        at: chrono::Utc::now().trunc_subsecs(0),
    }
}

/// The body with the binding's fields added at its top level: `{…}` becomes
/// `{…,"nonce":…,"op":…,…}`; an empty body becomes the binding alone. `None` for a body
/// that is not a JSON object (it goes out unbound, and the SDK refuses it).
pub(crate) fn bind(body: &[u8], binding: &Binding) -> Option<Vec<u8>> {
    let fields = serde_json::to_vec(binding).ok()?;
    if body.is_empty() {
        return Some(fields);
    }
    let inner = body.strip_prefix(b"{")?.strip_suffix(b"}")?;
    let mut bound = Vec::with_capacity(body.len() + fields.len());
    bound.push(b'{');
    bound.extend_from_slice(inner);
    if !inner.iter().all(u8::is_ascii_whitespace) {
        bound.push(b',');
    }
    bound.extend_from_slice(&fields[1..]);
    Some(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(nonce: Option<&str>) -> Binding {
        binding(
            Op::Lease,
            Echo::new(nonce, Some("m1"), Some("ann")),
            Some("from-header".into()),
        )
    }

    #[test]
    fn the_binding_joins_the_answers_own_fields_at_the_top_level() {
        let b = sample(Some("n-1"));
        assert_eq!(b.nonce.as_deref(), Some("n-1"), "the body's nonce wins");
        let bound = bind(br#"{"id":"s1","instances":["a"]}"#, &b).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&bound).unwrap();
        assert_eq!(value["id"], "s1");
        assert_eq!(value["instances"][0], "a");
        assert_eq!(value["nonce"], "n-1");
        assert_eq!(value["op"], "lease");
        assert_eq!(value["fingerprint"], "m1");
        assert_eq!(value["os_user"], "ann");
        let back: Binding = serde_json::from_slice(&bound).unwrap();
        assert_eq!(back, b);
    }

    #[test]
    fn empty_and_non_object_bodies() {
        let b = sample(None);
        assert_eq!(b.nonce.as_deref(), Some("from-header"));
        let alone: Binding = serde_json::from_slice(&bind(b"", &b).unwrap()).unwrap();
        assert_eq!(alone, b);
        let empty: Binding = serde_json::from_slice(&bind(b"{}", &b).unwrap()).unwrap();
        assert_eq!(empty, b);
        assert!(bind(b"[1]", &b).is_none());
        assert!(bind(b"plain text", &b).is_none());
    }

    #[test]
    fn malformed_nonces_are_refused() {
        for bad in ["", "a\nb", "é", &"n".repeat(129)] {
            assert!(Echo::new(Some(bad), None, None).check().is_err(), "{bad:?}");
        }
        assert!(Echo::new(Some("ok-123_:/+="), None, None).check().is_ok());
        let mut headers = HeaderMap::new();
        assert_eq!(header_nonce(&headers).unwrap(), None);
        headers.insert(NONCE_HEADER, "abc".parse().unwrap());
        assert_eq!(header_nonce(&headers).unwrap().as_deref(), Some("abc"));
        headers.insert(NONCE_HEADER, "".parse().unwrap());
        assert!(header_nonce(&headers).is_err());
    }
}
