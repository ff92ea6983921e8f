//! Offline license files and the workspace's public key.

use super::*;
use crate::binding::Echo;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiQuery;
use crate::license_cache::Need;
use crate::AppState;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use leasehold_core::{SeatKind, SeatModel};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LicenseFileQuery {
    key: Option<String>,
    fingerprint: String,
    nonce: Option<String>,
}

/// A signed offline license file for a machine that holds a seat (on a concurrent
/// license, valid no longer than its lease).
#[utoipa::path(get, path = "/v1/client/license-file", tag = "client",
    params(("fingerprint" = String, Query), ("key" = Option<String>, Query, description = "Or `Authorization: License …`"),
        ("nonce" = Option<String>, Query, description = "Or the `Leasehold-Nonce` header")),
    responses(KeyedRefusals,
        (status = 200, body = LicenseFile),
        (status = 403, description = "The license is not in force", body = ErrorBody),
        (status = 404, description = "No license has this key", body = ErrorBody),
        (status = 409, description = "`NOT_ACTIVATED`: this machine holds no seat", body = ErrorBody)))]
pub(super) async fn license_file(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<LicenseFileQuery>,
) -> Response {
    answer!(
        state,
        headers,
        query.key.as_deref(),
        Need::SeatCount,
        Echo::new(query.nonce.as_deref(), Some(&query.fingerprint), None),
        |caller| {
            caller.require_in_force()?;
            let fingerprint = text("fingerprint", &query.fingerprint)?;
            let license = &caller.license;
            // A file vouches for a seat this machine holds: its activation, or its live
            // lease, and then only as long as the lease (DESIGN §11: a file may not keep a
            // floating seat once it is checked in; borrowing is the way offline).
            let kind = match license.seat_model {
                SeatModel::Dedicated => SeatKind::Activation,
                SeatModel::Concurrent => SeatKind::Lease,
            };
            let issued_at = chrono::Utc::now();
            let held = state
                .store
                .held_seat(&license.id, kind, &fingerprint)
                .await?
                .filter(|seat| {
                    seat.expires_at
                        .is_none_or(|ms| ms > issued_at.timestamp_millis())
                });
            let Some(held) = held else {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "NOT_ACTIVATED",
                    "this machine holds no seat of this license: activate it or take a lease first",
                ));
            };
            let mut valid_until = issued_at
                + chrono::Duration::seconds(license.license_file_ttl_s.min(MAX_FILE_TTL_S));
            if let Some(lease_end) = held
                .expires_at
                .and_then(chrono::DateTime::from_timestamp_millis)
            {
                valid_until = valid_until.min(lease_end);
            }
            let payload = LicenseFilePayload {
                license: client_license(license),
                fingerprint,
                issued_at,
                valid_until: within_license(license, valid_until),
                kind: None,
                borrow_id: None,
                os_user: None,
            };
            Ok((StatusCode::OK, signed_file(&caller, &payload)?))
        }
    )
}

/// A file never outlives the license itself: `valid_until`, or the license's end if sooner.
pub(crate) fn within_license(
    license: &License,
    valid_until: chrono::DateTime<chrono::Utc>,
) -> chrono::DateTime<chrono::Utc> {
    license_end(license).map_or(valid_until, |end| valid_until.min(end))
}

/// The moment a license stops being in force: the start of the day after `expires_on`
/// (UTC).
pub(crate) fn license_end(license: &License) -> Option<chrono::DateTime<chrono::Utc>> {
    license
        .expires_on
        .and_then(|d| d.succ_opt())
        .and_then(|last_day| last_day.and_hms_opt(0, 0, 0))
        .map(|end| end.and_utc())
}

/// The payload, signed with the workspace's key as an offline license file.
pub(super) fn signed_file(caller: &Caller, payload: &LicenseFilePayload) -> ApiResult<LicenseFile> {
    let bytes = serde_json::to_vec(payload).map_err(|_| ApiError::internal())?;
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok(LicenseFile {
        format: LICENSE_FILE_FORMAT.into(),
        algorithm: "ed25519".into(),
        payload: b64.encode(&bytes),
        signature: b64.encode(caller.signer.sign_file(&bytes).to_bytes()),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PublicKeyQuery {
    key: Option<String>,
}

/// The workspace's signing key, for a license key (`?key=` or `Authorization: License`)
/// or an API token.
#[utoipa::path(get, path = "/v1/public-key", tag = "client",
    params(("key" = Option<String>, Query, description = "Or `Authorization: License …`, or a bearer token")),
    responses((status = 200, body = PublicKey),
        (status = 400, description = "The key is malformed", body = ErrorBody),
        (status = 401, description = "No license key or token", body = ErrorBody),
        (status = 404, description = "No license has this key", body = ErrorBody),
        (status = 429, description = "Past the rate limit (`RATE_LIMITED`)", body = ErrorBody)))]
pub(super) async fn public_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<PublicKeyQuery>,
) -> ApiResult<Json<PublicKey>> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer "));
    let workspace_id = if bearer && query.key.is_none() {
        crate::extract::Principal::authenticate(&state, &headers, true)
            .await?
            .workspace_id
    } else {
        Caller::require(&state, &headers, query.key.as_deref(), Need::Settings)
            .await?
            .license
            .workspace_id
            .clone()
    };
    let key = state
        .signers
        .workspace(state.store.as_ref(), &workspace_id)
        .await?;
    Ok(Json(PublicKey {
        algorithm: "ed25519".into(),
        public_key: key.public_key_base64(),
        public_key_hex: key.public_key_hex(),
    }))
}
