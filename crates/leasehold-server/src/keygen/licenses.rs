//! Licenses: validation (Keygen's codes, checked in Keygen's order, but for an expired
//! license, which is `EXPIRED` before its scope is checked), check-in, and the license's
//! machines and (empty) entitlements.

use super::doc::{self, KgError, KgResult};
use super::KeygenRefusals;
use super::{body_or_default, license_header, Licensee, Slug};
use crate::client::text;
use crate::license_cache::Need;
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use leasehold_core::{EffectiveStatus, SeatKind, SeatModel};
use leasehold_store::{License, PageRequest};
use serde::Deserialize;
use serde_json::{json, Value};

// No `Debug`: `meta.key` is a license key.
#[derive(Default, Deserialize)]
pub(super) struct ValidateBody {
    #[serde(default)]
    meta: ValidateMeta,
}

#[derive(Default, Deserialize)]
struct ValidateMeta {
    key: Option<String>,
    nonce: Option<Value>,
    scope: Option<Value>,
}

/// What a validation is scoped to (Keygen's `meta.scope`; what Leasehold does not know,
/// such as `policy` or `checksum`, is echoed and not checked).
#[derive(Default, Deserialize)]
struct Scope {
    product: Option<String>,
    fingerprint: Option<String>,
    fingerprints: Option<Vec<String>>,
    machine: Option<String>,
    entitlements: Option<Vec<String>>,
}

/// `POST /v1/licenses/actions/validate-key`: the key in `meta.key` (or the header).
/// With an `Authorization: License` header, as Keygen clients always send, an unknown
/// key is 401 `LICENSE_INVALID` and a suspended license 403 `LICENSE_SUSPENDED`;
/// without one, both are 200 answers (`NOT_FOUND`, `SUSPENDED`).
#[utoipa::path(post, path = "/keygen/v1/licenses/actions/validate-key", tag = "keygen",
    responses(KeygenRefusals,
        (status = 200, description = "A validation: `meta.valid`, `meta.code`, the license in `data`", content_type = "application/vnd.api+json")))]
pub(super) async fn validate_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    slug: Option<Extension<Slug>>,
    body: Bytes,
) -> Response {
    let body: ValidateBody = match body_or_default(&body) {
        Ok(body) => body,
        Err(error) => return error.into_response(),
    };
    let header = license_header(&headers);
    let key = body.meta.key.as_deref().or(header);
    if key.is_none() {
        return KgError::bad_request("KEY_BLANK", "meta.key is required")
            .at("/meta/key")
            .into_response();
    }
    // Keygen authenticates the header's key first: the license it names may validate
    // only itself.
    let authenticated = header.is_some();
    if let (Some(header), Some(key)) = (header, body.meta.key.as_deref()) {
        if header != key.trim() {
            return KgError::new(
                StatusCode::FORBIDDEN,
                "ACCESS_DENIED",
                "meta.key is not the key of the authenticated license",
            )
            .at("/meta/key")
            .into_response();
        }
    }
    let found = Licensee::find(&state, &headers, slug.as_deref(), key, Need::SeatCount).await;
    match found {
        Err(error) => error.into_response(),
        Ok(None) if authenticated => KgError::license_invalid().into_response(),
        Ok(None) => doc::document(
            StatusCode::OK,
            &validation(None, &body.meta, "NOT_FOUND", "does not exist"),
        ),
        Ok(Some(licensee)) => {
            let result = validate_licensee(&state, &licensee, &body.meta, authenticated).await;
            licensee.answer(result)
        }
    }
}

/// `POST /v1/licenses/{id}/actions/validate`: the authenticated license, by id.
#[utoipa::path(post, path = "/keygen/v1/licenses/{id}/actions/validate", tag = "keygen",
    params(("id" = String, Path)),
    responses(KeygenRefusals,
        (status = 200, description = "A validation", content_type = "application/vnd.api+json"),
        (status = 404, description = "Not the authenticated license", content_type = "application/vnd.api+json")))]
pub(super) async fn validate(
    State(state): State<AppState>,
    headers: HeaderMap,
    slug: Option<Extension<Slug>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let body: ValidateBody = match body_or_default(&body) {
        Ok(body) => body,
        Err(error) => return error.into_response(),
    };
    match Licensee::find(&state, &headers, slug.as_deref(), None, Need::SeatCount).await {
        Err(error) => error.into_response(),
        Ok(None) => KgError::license_invalid().into_response(),
        Ok(Some(licensee)) => {
            let result = match licensee.require_license(&id) {
                Ok(()) => validate_licensee(&state, &licensee, &body.meta, true).await,
                Err(error) => Err(error),
            };
            licensee.answer(result)
        }
    }
}

async fn validate_licensee(
    state: &AppState,
    licensee: &Licensee,
    meta: &ValidateMeta,
    authenticated: bool,
) -> KgResult<Response> {
    let scope: Scope = match &meta.scope {
        Some(scope) => serde_json::from_value(scope.clone()).map_err(|error| {
            KgError::bad_request("SCOPE_INVALID", format!("meta.scope: {error}")).at("/meta/scope")
        })?,
        None => Scope::default(),
    };
    let license = licensee.license();
    let (code, detail) = match super::standing(license) {
        EffectiveStatus::Suspended if authenticated => return Err(KgError::suspended()),
        EffectiveStatus::Suspended => ("SUSPENDED", "is suspended"),
        EffectiveStatus::Expired => ("EXPIRED", "is expired"),
        _ => check_scope(state, license, &scope).await?,
    };
    Ok(doc::document(
        StatusCode::OK,
        &validation(
            Some(doc::license(license, &licensee.key)),
            meta,
            code,
            detail,
        ),
    ))
}

/// A validation document.
fn validation(data: Option<Value>, meta: &ValidateMeta, code: &str, detail: &str) -> Value {
    let mut answer = json!({
        "data": data,
        "meta": {
            "ts": doc::time(chrono::Utc::now()),
            "valid": code == "VALID",
            "detail": detail,
            "code": code,
            "scope": meta.scope.clone().unwrap_or_else(|| json!({})),
        },
    });
    if let Some(nonce) = &meta.nonce {
        answer["meta"]["nonce"] = nonce.clone();
    }
    answer
}

/// The most fingerprints a validation's scope may name.
const MAX_SCOPE_FINGERPRINTS: usize = 100;

/// Keygen's scope checks, in its order, for a license in force.
async fn check_scope(
    state: &AppState,
    license: &License,
    scope: &Scope,
) -> KgResult<(&'static str, &'static str)> {
    let floating = license.seat_model == SeatModel::Concurrent || license.seats_total > 1;
    if let Some(product) = scope.product.as_deref().filter(|p| !p.is_empty()) {
        if product != license.application_id {
            return Ok(("PRODUCT_SCOPE_MISMATCH", "product scope does not match"));
        }
    }
    match scope.entitlements.as_deref() {
        Some([]) => return Ok(("ENTITLEMENTS_SCOPE_EMPTY", "entitlements scope is empty")),
        Some(_) => {
            return Ok((
                "ENTITLEMENTS_MISSING",
                "is missing one or more required entitlements",
            ))
        }
        None => {}
    }
    let no_machines = if floating {
        "NO_MACHINES"
    } else {
        "NO_MACHINE"
    };
    if let Some(machine) = &scope.machine {
        let machine = text("scope.machine", machine)?;
        let seat = state
            .store
            .machine_seat(&license.id, &machine)
            .await?
            .filter(|seat| seat.id == machine);
        return Ok(match seat {
            Some(seat) if doc::dead(&seat) => ("HEARTBEAT_DEAD", "machine heartbeat is dead"),
            Some(_) => ("VALID", "is valid"),
            None if license.seats_used == 0 => (
                no_machines,
                if floating {
                    "machine is not activated (has no associated machines)"
                } else {
                    "machine is not activated (has no associated machine)"
                },
            ),
            None => (
                "MACHINE_SCOPE_MISMATCH",
                "machine is not activated (does not match any associated machines)",
            ),
        });
    }
    let mut fingerprints: Vec<&str> = scope.fingerprint.as_deref().into_iter().collect();
    fingerprints.extend(scope.fingerprints.iter().flatten().map(String::as_str));
    if fingerprints.len() > MAX_SCOPE_FINGERPRINTS {
        return Err(KgError::bad_request(
            "FINGERPRINT_SCOPE_INVALID",
            format!("names more than {MAX_SCOPE_FINGERPRINTS} fingerprints"),
        )
        .at("/meta/scope/fingerprints"));
    }
    if fingerprints.is_empty() {
        if scope.fingerprints.is_some() {
            return Ok(("FINGERPRINT_SCOPE_EMPTY", "fingerprint scope is empty"));
        }
        return Ok(("VALID", "is valid"));
    }
    let mut found_dead = false;
    for fingerprint in fingerprints {
        let fingerprint = text("scope.fingerprint", fingerprint)?;
        // An id is not a fingerprint: only a seat this fingerprint holds counts.
        let seat = state
            .store
            .machine_seat(&license.id, &fingerprint)
            .await?
            .filter(|seat| seat.fingerprint.as_deref() == Some(fingerprint.as_str()));
        match seat {
            Some(seat) if doc::dead(&seat) => found_dead = true,
            Some(_) => return Ok(("VALID", "is valid")),
            None => {}
        }
    }
    Ok(if found_dead {
        ("HEARTBEAT_DEAD", "machine heartbeat is dead")
    } else if license.seats_used == 0 {
        (
            no_machines,
            if floating {
                "fingerprint is not activated (has no associated machines)"
            } else {
                "fingerprint is not activated (has no associated machine)"
            },
        )
    } else {
        (
            "FINGERPRINT_SCOPE_MISMATCH",
            "fingerprint is not activated (does not match any associated machines)",
        )
    })
}

/// `POST /v1/licenses/{id}/actions/check-in`: the license (Leasehold has no check-in
/// policy to record).
#[utoipa::path(post, path = "/keygen/v1/licenses/{id}/actions/check-in", tag = "keygen",
    params(("id" = String, Path)),
    responses(KeygenRefusals,
        (status = 200, description = "The license", content_type = "application/vnd.api+json"),
        (status = 404, description = "Not the authenticated license", content_type = "application/vnd.api+json")))]
pub(super) async fn check_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    slug: Option<Extension<Slug>>,
    Path(id): Path<String>,
) -> Response {
    with_licensee!(state, headers, slug, |licensee| {
        licensee.require_license(&id)?;
        Ok(doc::document(
            StatusCode::OK,
            &json!({ "data": doc::license(licensee.license(), &licensee.key) }),
        ))
    })
}

/// `GET /v1/licenses/{id}/machines`: the license's machines (its first 200 seats held
/// by machines, newest first).
#[utoipa::path(get, path = "/keygen/v1/licenses/{id}/machines", tag = "keygen",
    params(("id" = String, Path)),
    responses(KeygenRefusals,
        (status = 200, description = "The license's machines", content_type = "application/vnd.api+json"),
        (status = 404, description = "Not the authenticated license", content_type = "application/vnd.api+json")))]
pub(super) async fn machines(
    State(state): State<AppState>,
    headers: HeaderMap,
    slug: Option<Extension<Slug>>,
    Path(id): Path<String>,
) -> Response {
    with_licensee!(state, headers, slug, |licensee| {
        licensee.require_license(&id)?;
        let license = licensee.license();
        let page = state
            .store
            .list_seats(
                &license.workspace_id,
                &license.id,
                true,
                &PageRequest::first(PageRequest::MAX_LIMIT),
            )
            .await?;
        let machines: Vec<Value> = page
            .items
            .iter()
            .filter(|seat| seat.kind != SeatKind::Assignment)
            .map(|seat| doc::machine(seat, license))
            .collect();
        Ok(doc::document(StatusCode::OK, &json!({ "data": machines })))
    })
}

/// `GET /v1/licenses/{id}/entitlements`: none (Leasehold has no entitlements).
#[utoipa::path(get, path = "/keygen/v1/licenses/{id}/entitlements", tag = "keygen",
    params(("id" = String, Path)),
    responses(KeygenRefusals,
        (status = 200, description = "None: `data` is empty", content_type = "application/vnd.api+json"),
        (status = 404, description = "Not the authenticated license", content_type = "application/vnd.api+json")))]
pub(super) async fn entitlements(
    State(state): State<AppState>,
    headers: HeaderMap,
    slug: Option<Extension<Slug>>,
    Path(id): Path<String>,
) -> Response {
    with_licensee!(state, headers, slug, |licensee| {
        licensee.require_license(&id)?;
        Ok(doc::document(StatusCode::OK, &json!({ "data": [] })))
    })
}

/// `POST /v1/licenses/{id}/actions/increment-usage`: not supported (422).
#[utoipa::path(post, path = "/keygen/v1/licenses/{id}/actions/increment-usage", tag = "keygen",
    params(("id" = String, Path)),
    responses(KeygenRefusals,
        (status = 404, description = "Not the authenticated license", content_type = "application/vnd.api+json"),
        (status = 422, description = "`NOT_SUPPORTED`", content_type = "application/vnd.api+json")))]
pub(super) async fn increment_usage(
    State(state): State<AppState>,
    headers: HeaderMap,
    slug: Option<Extension<Slug>>,
    Path(id): Path<String>,
) -> Response {
    with_licensee!(state, headers, slug, |licensee| {
        licensee.require_license(&id)?;
        Err(KgError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "NOT_SUPPORTED",
            "usage counts are not supported: Leasehold counts seats",
        ))
    })
}
