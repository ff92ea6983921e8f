//! Machine files and license files in Keygen's certificate formats, for offline use:
//! `-----BEGIN MACHINE FILE-----` + base64 of `{"enc", "sig", "alg"}`, where `enc` is the
//! dataset (`{meta: {issued, expiry, ttl}, data, included}`), encrypted with AES-256-GCM
//! (`aes-256-gcm+ed25519`: the key is SHA-256 of the license key, and of the fingerprint
//! for a machine file) or only base64'd (`base64+ed25519`), and `sig` is the workspace's
//! Ed25519 signature of `machine/` (or `license/`) and `enc`.

use super::doc::{self, KgError, KgResult};
use super::machines::{find, instance_of};
use super::KeygenRefusals;
use super::Slug;
use crate::client::files::within_license;
use crate::client::MAX_FILE_TTL_S;
use crate::signing::Signer;
use crate::AppState;
use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use base64::Engine;
use chrono::{DateTime, Utc};
use leasehold_core::{SeatKind, SeatModel};
use leasehold_store::{LeaseHolder, License};
use rand::RngCore;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Keygen's bounds on a file's time to live.
const MIN_TTL_S: i64 = 3600;
const MAX_TTL_S: i64 = 31_556_952;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Algorithm {
    Aes256GcmEd25519,
    Base64Ed25519,
}

impl Algorithm {
    fn name(self) -> &'static str {
        match self {
            Algorithm::Aes256GcmEd25519 => "aes-256-gcm+ed25519",
            Algorithm::Base64Ed25519 => "base64+ed25519",
        }
    }
}

/// What a check-out asks for (its query).
#[derive(Debug)]
struct Options {
    /// `None`: the policy's.
    ttl_s: Option<i64>,
    includes: Vec<String>,
    algorithm: Algorithm,
}

const MACHINE_INCLUDES: &[&str] = &[
    "license.entitlements",
    "license.product",
    "license.policy",
    "license.owner",
    "license.users",
    "license",
    "components",
    "environment",
    "group",
    "owner",
];
const LICENSE_INCLUDES: &[&str] = &[
    "entitlements",
    "environment",
    "product",
    "policy",
    "group",
    "owner",
    "users",
];

impl Options {
    fn parse(query: Option<&str>, allowed_includes: &[&str]) -> KgResult<Options> {
        let mut options = Options {
            ttl_s: None,
            includes: Vec::new(),
            algorithm: Algorithm::Base64Ed25519,
        };
        let mut encrypt = None;
        let mut algorithm = None;
        for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match name.as_ref() {
                "ttl" if value == "null" || value.is_empty() => options.ttl_s = None,
                "ttl" => {
                    let ttl = value
                        .parse::<i64>()
                        .map_err(|_| ttl_invalid("must be a number of seconds"))?;
                    if ttl < MIN_TTL_S {
                        return Err(ttl_invalid(
                            "must be greater than or equal to 3600 (1 hour)",
                        ));
                    }
                    if ttl > MAX_TTL_S {
                        return Err(ttl_invalid(
                            "must be less than or equal to 31556952 (1 year)",
                        ));
                    }
                    options.ttl_s = Some(ttl);
                }
                "include" => {
                    for include in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                        if !allowed_includes.contains(&include) {
                            return Err(KgError::bad_request(
                                "CHECKOUT_INCLUDE_INVALID",
                                format!("unsupported include: {include}"),
                            )
                            .parameter("include"));
                        }
                        options.includes.push(include.to_string());
                    }
                }
                "encrypt" => {
                    encrypt = Some(match value.as_ref() {
                        "1" | "true" => true,
                        "0" | "false" => false,
                        _ => {
                            return Err(KgError::bad_request(
                                "CHECKOUT_ENCRYPT_INVALID",
                                "must be true or false",
                            )
                            .parameter("encrypt"))
                        }
                    })
                }
                // A `+` sent raw reads as a space.
                "algorithm" => {
                    algorithm = Some(match value.replace(' ', "+").as_str() {
                        "aes-256-gcm+ed25519" => Algorithm::Aes256GcmEd25519,
                        "base64+ed25519" => Algorithm::Base64Ed25519,
                        _ => {
                            return Err(KgError::bad_request(
                                "CHECKOUT_ALGORITHM_INVALID",
                                "unsupported algorithm: Leasehold signs with Ed25519 \
                                 (aes-256-gcm+ed25519 or base64+ed25519)",
                            )
                            .parameter("algorithm"))
                        }
                    })
                }
                _ => {}
            }
        }
        options.algorithm = match (algorithm, encrypt) {
            (Some(algorithm), _) => algorithm,
            (None, Some(true)) => Algorithm::Aes256GcmEd25519,
            (None, _) => Algorithm::Base64Ed25519,
        };
        Ok(options)
    }
}

fn ttl_invalid(detail: &str) -> KgError {
    KgError::bad_request("CHECKOUT_TTL_INVALID", detail).parameter("ttl")
}

/// The shortest a file may be valid: a file with less left is not issued (and its
/// `ttl` is never 0, which Keygen clients read as "never expires").
const MIN_LEFT_S: i64 = 60;

/// The file's end: the asked time to live (else the policy's), within the policy's
/// `license_file_ttl_s`, the seat's own end (`seat_end`) and the license's; `None` when
/// less than a minute would be left.
fn expiry(
    license: &License,
    options: &Options,
    issued: DateTime<Utc>,
    seat_end: Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    let policy = license.license_file_ttl_s.min(MAX_FILE_TTL_S);
    let ttl = options.ttl_s.unwrap_or(policy).min(policy);
    let mut end = issued + chrono::Duration::seconds(ttl);
    if let Some(seat_end) = seat_end {
        end = end.min(seat_end);
    }
    let end = within_license(license, end);
    (end - issued >= chrono::Duration::seconds(MIN_LEFT_S)).then_some(end)
}

/// The certificate of a dataset.
fn certificate(
    label: &str,
    signed_prefix: &str,
    algorithm: Algorithm,
    dataset: &[u8],
    secret: &str,
    signer: &Signer,
) -> KgResult<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let enc = match algorithm {
        Algorithm::Base64Ed25519 => b64.encode(dataset),
        Algorithm::Aes256GcmEd25519 => {
            let key = Sha256::digest(secret.as_bytes());
            let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key));
            let mut iv = [0u8; 12];
            rand::rngs::OsRng.fill_bytes(&mut iv);
            let sealed = cipher
                .encrypt(Nonce::from_slice(&iv), dataset)
                .map_err(|_| KgError::from(crate::error::ApiError::internal()))?;
            let (ciphertext, tag) = sealed.split_at(sealed.len() - 16);
            format!(
                "{}.{}.{}",
                b64.encode(ciphertext),
                b64.encode(iv),
                b64.encode(tag)
            )
        }
    };
    let signature = signer.sign_keygen(format!("{signed_prefix}{enc}").as_bytes());
    let document = json!({
        "enc": enc,
        "sig": b64.encode(signature.to_bytes()),
        "alg": algorithm.name(),
    });
    let encoded = b64.encode(document.to_string());
    let lines: Vec<&str> = encoded
        .as_bytes()
        .chunks(60)
        .map(|chunk| std::str::from_utf8(chunk).unwrap_or_default())
        .collect();
    Ok(format!(
        "-----BEGIN {label} FILE-----\n{}\n-----END {label} FILE-----\n",
        lines.join("\n")
    ))
}

/// The dataset a file carries.
fn dataset(
    issued: DateTime<Utc>,
    expiry: DateTime<Utc>,
    data: Value,
    included: Vec<Value>,
) -> Vec<u8> {
    json!({
        "meta": {
            "issued": doc::time(issued),
            "expiry": doc::time(expiry),
            "ttl": (expiry - issued).num_seconds(),
        },
        "data": data,
        "included": included,
    })
    .to_string()
    .into_bytes()
}

/// A file's resource (`machine-files` or `license-files`).
#[allow(clippy::too_many_arguments)]
fn file_resource(
    kind: &str,
    certificate: String,
    issued: DateTime<Utc>,
    expiry: DateTime<Utc>,
    options: &Options,
    license: &License,
    machine_id: Option<&str>,
) -> Value {
    let mut relationships = json!({
        "license": { "data": { "type": "licenses", "id": license.id } },
    });
    if let Some(id) = machine_id {
        relationships["machine"] = json!({ "data": { "type": "machines", "id": id } });
    }
    json!({
        "data": {
            "id": uuid::Uuid::now_v7().to_string(),
            "type": kind,
            "attributes": {
                "certificate": certificate,
                "issued": doc::time(issued),
                "expiry": doc::time(expiry),
                "ttl": (expiry - issued).num_seconds(),
                "algorithm": options.algorithm.name(),
                "includes": options.includes,
            },
            "relationships": relationships,
        }
    })
}

/// `POST /v1/machines/{id}/actions/check-out`: a machine file for a machine that holds
/// a seat. On a concurrent license the file lasts no longer than the seat: its lease,
/// or, when the license lends seats, a borrow the lease becomes (for the file's time in
/// whole days, at least one, at most the policy's `max_borrow_days`).
#[utoipa::path(post, path = "/keygen/v1/machines/{id}/actions/check-out", tag = "keygen",
    params(("id" = String, Path, description = "The machine's id or fingerprint"),
        ("ttl" = Option<String>, Query, description = "Seconds (3600 to a year), or `null`: the policy's"),
        ("encrypt" = Option<String>, Query), ("algorithm" = Option<String>, Query), ("include" = Option<String>, Query)),
    responses(KeygenRefusals,
        (status = 200, description = "A `machine-files` resource", content_type = "application/vnd.api+json"),
        (status = 404, description = "No such machine", content_type = "application/vnd.api+json"),
        (status = 422, description = "`MACHINE_HEARTBEAT_DEAD`", content_type = "application/vnd.api+json")))]
pub(super) async fn machine_file(
    State(state): State<AppState>,
    headers: HeaderMap,
    slug: Option<Extension<Slug>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    with_licensee!(state, headers, slug, |licensee| {
        let options = Options::parse(query.as_deref(), MACHINE_INCLUDES)?;
        let caller = &licensee.caller;
        let license = &caller.license;
        caller.require_in_force().map_err(KgError::from)?;
        let mut seat = find(&state, &licensee, &id).await?;
        let issued = Utc::now();
        if seat.kind == SeatKind::Lease && license.max_borrow_days > 0 {
            let wanted = options
                .ttl_s
                .unwrap_or(license.license_file_ttl_s)
                .min(license.license_file_ttl_s);
            let days = ((wanted + 86_399) / 86_400).clamp(1, license.max_borrow_days);
            let holder = LeaseHolder {
                fingerprint: seat.fingerprint.clone().unwrap_or_default(),
                os_user: seat.os_user.clone().unwrap_or_default(),
                identifier: seat.identifier.clone(),
                instance: instance_of(&seat),
                queue: false,
            };
            match state.store.borrow(license, &holder, days).await {
                Ok((borrowed, _)) => {
                    caller.publish(&state, "seat.borrowed");
                    seat = borrowed;
                }
                // Past the borrow limit (or a lease that lapsed): the lease's time.
                Err(error) => {
                    let error = crate::error::ApiError::from(error);
                    if error.status.is_server_error() {
                        return Err(error.into());
                    }
                }
            }
        }
        let seat_end = match seat.kind {
            SeatKind::Activation => None,
            _ => Some(seat.expires_at.map_or(issued, crate::convert::time)),
        };
        let expiry = expiry(license, &options, issued, seat_end).ok_or_else(|| {
            KgError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "MACHINE_HEARTBEAT_DEAD",
                "is dead",
            )
        })?;
        let data = dataset(
            issued,
            expiry,
            doc::machine(&seat, license),
            vec![doc::license(license, &licensee.key)],
        );
        let fingerprint = seat.fingerprint.clone().unwrap_or_default();
        let certificate = certificate(
            "MACHINE",
            "machine/",
            options.algorithm,
            &data,
            &format!("{}{fingerprint}", licensee.key),
            &caller.signer,
        )?;
        Ok(doc::document(
            StatusCode::OK,
            &file_resource(
                "machine-files",
                certificate,
                issued,
                expiry,
                &options,
                license,
                Some(&seat.id),
            ),
        ))
    })
}

/// `POST` (the file's resource) or `GET` (its certificate as a download)
/// `/v1/licenses/{id}/actions/check-out`: a license file, of a dedicated license only. A
/// file of a concurrent license would vouch for a floating seat no one holds (DESIGN
/// §11): there, a machine checks out its machine file.
#[utoipa::path(post, path = "/keygen/v1/licenses/{id}/actions/check-out", tag = "keygen",
    params(("id" = String, Path), ("ttl" = Option<String>, Query), ("encrypt" = Option<String>, Query),
        ("algorithm" = Option<String>, Query), ("include" = Option<String>, Query)),
    responses(KeygenRefusals,
        (status = 200, description = "A `license-files` resource (`GET`: the certificate itself, `application/octet-stream`)", content_type = "application/vnd.api+json"),
        (status = 404, description = "Not the authenticated license", content_type = "application/vnd.api+json"),
        (status = 422, description = "`CHECKOUT_NOT_ALLOWED`: a floating license", content_type = "application/vnd.api+json")))]
pub(super) async fn license_file(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    slug: Option<Extension<Slug>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    with_licensee!(state, headers, slug, |licensee| {
        licensee.require_license(&id)?;
        let options = Options::parse(query.as_deref(), LICENSE_INCLUDES)?;
        let caller = &licensee.caller;
        let license = &caller.license;
        caller.require_in_force().map_err(KgError::from)?;
        if license.seat_model == SeatModel::Concurrent {
            return Err(KgError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "CHECKOUT_NOT_ALLOWED",
                "this license's seats are floating: a file vouches for a seat, so activate \
                 the machine and check out its machine file",
            ));
        }
        let issued = Utc::now();
        let expiry = expiry(license, &options, issued, None).ok_or_else(|| {
            KgError::new(
                StatusCode::FORBIDDEN,
                "LICENSE_EXPIRED",
                "License is expired",
            )
        })?;
        let data = dataset(
            issued,
            expiry,
            doc::license(license, &licensee.key),
            Vec::new(),
        );
        let certificate = certificate(
            "LICENSE",
            "license/",
            options.algorithm,
            &data,
            &licensee.key,
            &caller.signer,
        )?;
        if method == Method::GET {
            let mut response = certificate.into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            if let Ok(value) =
                HeaderValue::from_str(&format!("attachment; filename=\"{}.lic\"", license.id))
            {
                headers.insert(header::CONTENT_DISPOSITION, value);
            }
            return Ok(response);
        }
        Ok(doc::document(
            StatusCode::OK,
            &file_resource(
                "license-files",
                certificate,
                issued,
                expiry,
                &options,
                license,
                None,
            ),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Whatever the query, a check-out's options parse or are refused as the
        /// client's mistake (400), never a panic; a TTL accepted is within Keygen's bounds.
        #[test]
        fn any_query_parses_or_is_refused(query in "\\PC{0,120}") {
            for includes in [MACHINE_INCLUDES, LICENSE_INCLUDES] {
                match Options::parse(Some(&query), includes) {
                    Ok(options) => {
                        if let Some(ttl) = options.ttl_s {
                            proptest::prop_assert!((MIN_TTL_S..=MAX_TTL_S).contains(&ttl));
                        }
                    }
                    Err(error) => proptest::prop_assert_eq!(error.status, StatusCode::BAD_REQUEST),
                }
            }
        }
    }

    #[test]
    fn keygen_clients_queries_parse() {
        let machine = Options::parse(
            Some("encrypt=1&include=license.entitlements&ttl=3600"),
            MACHINE_INCLUDES,
        )
        .unwrap();
        assert_eq!(machine.algorithm, Algorithm::Aes256GcmEd25519);
        assert_eq!(machine.ttl_s, Some(3600));
        let license = Options::parse(
            Some("ttl=null&algorithm=base64%2Bed25519"),
            LICENSE_INCLUDES,
        )
        .unwrap();
        assert_eq!(license.algorithm, Algorithm::Base64Ed25519);
        assert_eq!(license.ttl_s, None);
        // A `+` sent raw reads as a space, and means the same.
        let raw = Options::parse(Some("algorithm=aes-256-gcm+ed25519"), LICENSE_INCLUDES).unwrap();
        assert_eq!(raw.algorithm, Algorithm::Aes256GcmEd25519);
        assert!(Options::parse(Some("ttl=59"), LICENSE_INCLUDES).is_err());
        assert!(Options::parse(Some("include=license.secrets"), MACHINE_INCLUDES).is_err());
    }
}
