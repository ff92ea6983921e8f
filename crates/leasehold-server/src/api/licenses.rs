use crate::convert;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery, Paging, Principal};
use crate::service::tracking as service;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use leasehold_core::{LicenseStatus, Permission};
use leasehold_proto::{
    CreateLicense, ErrorBody, License, Page, QueueItem, QueueList, RevealedKey, UpdateLicense,
};
use leasehold_store::LicenseFilter;
use serde::Deserialize;

/// Creates a license. The answer carries the full `key` this once.
#[utoipa::path(post, path = "/v1/licenses", tag = "licenses", request_body = CreateLicense,
    security(("bearer" = [])),
    responses((status = 201, body = License), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_license(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateLicense>,
) -> ApiResult<(StatusCode, Json<License>)> {
    Ok((
        StatusCode::CREATED,
        Json(service::create_license(&state, &principal, body).await?),
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LicenseQuery {
    pub application_id: Option<String>,
    pub status: Option<LicenseStatus>,
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

/// Licenses, newest first, with their seats in use.
#[utoipa::path(get, path = "/v1/licenses", tag = "licenses", params(LicenseQuery), security(("bearer" = [])),
    responses((status = 200, body = Page<License>), (status = 400, body = ErrorBody)))]
pub async fn list_licenses(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<LicenseQuery>,
) -> ApiResult<Json<Page<License>>> {
    principal.require(Permission::LicenseView)?;
    let paging = Paging {
        cursor: query.cursor,
        limit: query.limit,
    };
    let filter = LicenseFilter {
        application_id: query.application_id,
        status: query.status,
    };
    let page = state
        .store
        .list_licenses(&principal.workspace_id, &filter, &paging.request()?)
        .await?;
    Ok(Json(convert::page(page, convert::license)))
}

#[utoipa::path(get, path = "/v1/licenses/{id}", tag = "licenses", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = License), (status = 404, body = ErrorBody)))]
pub async fn get_license(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<License>> {
    principal.require(Permission::LicenseView)?;
    let license = state.store.license(&principal.workspace_id, &id).await?;
    Ok(Json(convert::license(license)))
}

/// Changes a license. Lowering `seats_total` below the seats in use is refused (409);
/// reminders follow the new dates and status in the same transaction.
#[utoipa::path(patch, path = "/v1/licenses/{id}", tag = "licenses", request_body = UpdateLicense,
    security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = License), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn update_license(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateLicense>,
) -> ApiResult<Json<License>> {
    Ok(Json(
        service::update_license(&state, &principal, &id, body).await?,
    ))
}

/// Deletes a license: its seats are released and its reminders removed; the ledger
/// and the audit log keep its history.
#[utoipa::path(delete, path = "/v1/licenses/{id}", tag = "licenses", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_license(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    principal.require(Permission::LicenseManage)?;
    state
        .store
        .delete_license(&principal.actor, &principal.workspace_id, &id)
        .await?;
    state
        .live
        .publish(&principal.workspace_id, &id, "license.deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// The full key, for those with license.manage; every reveal is in the audit log.
#[utoipa::path(post, path = "/v1/licenses/{id}/reveal-key", tag = "licenses", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = RevealedKey), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn reveal_key(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<RevealedKey>> {
    principal.require(Permission::LicenseManage)?;
    let sealed = state
        .store
        .reveal_license_key(&principal.actor, &principal.workspace_id, &id)
        .await?;
    let key = state.master.decrypt_string(&sealed).map_err(|error| {
        tracing::error!(%error, license_id = %id, "stored key does not decrypt");
        ApiError::internal()
    })?;
    Ok(Json(RevealedKey { key }))
}

/// The license's wait queue (DESIGN §7): the waiters that still hold their place, head
/// first.
#[utoipa::path(get, path = "/v1/licenses/{id}/queue", tag = "licenses", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = QueueList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn license_queue(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<QueueList>> {
    principal.require(Permission::LicenseView)?;
    let waiters = state.store.waiters(&principal.workspace_id, &id).await?;
    let items = waiters
        .into_iter()
        .map(|w| QueueItem {
            position: w.position,
            fingerprint: w.fingerprint,
            os_user: w.os_user,
            identifier: w.identifier,
            since: convert::time(w.since),
            last_seen_at: convert::time(w.last_seen_at),
        })
        .collect();
    Ok(Json(QueueList { items }))
}
