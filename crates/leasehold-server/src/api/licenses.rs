use super::{optional_text, required_text};
use crate::convert;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery, Paging, Principal};
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use leasehold_core::{is_currency_code, keys, LeasePolicy, LicenseStatus, Permission, SeatModel};
use leasehold_proto::{CreateLicense, ErrorBody, License, Page, RevealedKey, UpdateLicense};
use leasehold_store::{LicenseChange, LicenseFilter, NewLicense, StoreError};
use serde::Deserialize;

/// The most seats one license may have.
const MAX_SEATS: i64 = 10_000_000;

/// Checks a license's fields as they will be stored, naming the first bad field.
fn check_fields(c: &LicenseChange) -> Result<(), StoreError> {
    if c.seats_total < 1 {
        return Err(StoreError::invalid("seats_total", "must be at least 1"));
    }
    if c.seats_total > MAX_SEATS {
        return Err(StoreError::invalid(
            "seats_total",
            format!("must be at most {MAX_SEATS}"),
        ));
    }
    if let Some(cost) = &c.cost {
        if cost.amount_minor < 0 {
            return Err(StoreError::invalid(
                "cost.amount_minor",
                "must not be negative",
            ));
        }
        if !is_currency_code(&cost.currency) {
            return Err(StoreError::invalid(
                "cost.currency",
                "must be an ISO 4217 code such as USD",
            ));
        }
    }
    if let (Some(bought), Some(expires)) = (c.purchased_on, c.expires_on) {
        if expires < bought {
            return Err(StoreError::invalid(
                "expires_on",
                "must not be before purchased_on",
            ));
        }
    }
    if let (Some(bought), Some(expires)) = (c.purchased_on, c.maintenance_expires_on) {
        if expires < bought {
            return Err(StoreError::invalid(
                "maintenance_expires_on",
                "must not be before purchased_on",
            ));
        }
    }
    c.policy
        .check()
        .map_err(|(field, message)| StoreError::invalid(field, message))
}

fn text(field: &str, value: Option<&str>, max: usize) -> Result<Option<String>, StoreError> {
    optional_text(field, value, max).map_err(|e| StoreError::invalid(field, e.message))
}

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
        Json(create(&state, &principal, body).await?),
    ))
}

/// Creates a license (the API and the console both come here).
pub(crate) async fn create(
    state: &AppState,
    principal: &Principal,
    body: CreateLicense,
) -> ApiResult<License> {
    principal.require(Permission::LicenseManage)?;
    let key = match body.key.as_deref() {
        Some(key) => {
            keys::normalize_key(key).map_err(|message| ApiError::invalid("key", message))?
        }
        None => crate::secrets::generate_license_key(),
    };
    let fields = LicenseChange {
        licensed_to: required_text("licensed_to", &body.licensed_to, 200)?,
        vendor: optional_text("vendor", body.vendor.as_deref(), 200)?,
        license_type: body.license_type,
        status: body.status.unwrap_or(LicenseStatus::Active),
        seat_model: body.seat_model.unwrap_or(SeatModel::Dedicated),
        seats_total: body.seats_total,
        version: optional_text("version", body.version.as_deref(), 100)?,
        cost: body.cost,
        purchased_on: body.purchased_on,
        expires_on: body.expires_on,
        maintenance_expires_on: body.maintenance_expires_on,
        po_number: optional_text("po_number", body.po_number.as_deref(), 100)?,
        notes: optional_text("notes", body.notes.as_deref(), 10_000)?,
        policy: body
            .policy
            .unwrap_or_default()
            .apply_to(LeasePolicy::default()),
    };
    check_fields(&fields)?;
    let license = NewLicense {
        application_id: body.application_id,
        key_enc: state.master.encrypt(key.as_bytes()),
        key_hash: state.master.key_hash(&key),
        key_masked: keys::mask_key(&key),
        fields,
    };
    let created = state
        .store
        .create_license(&principal.actor, &principal.workspace_id, license)
        .await?;
    let mut out = convert::license(created);
    out.key = Some(key);
    Ok(out)
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
    Ok(Json(update(&state, &principal, &id, body).await?))
}

/// Changes a license (the API and the console both come here).
pub(crate) async fn update(
    state: &AppState,
    principal: &Principal,
    id: &str,
    body: UpdateLicense,
) -> ApiResult<License> {
    principal.require(Permission::LicenseManage)?;
    let apply = |current: &leasehold_store::License| -> Result<LicenseChange, StoreError> {
        let mut c = current.to_change();
        if let Some(licensed_to) = &body.licensed_to {
            c.licensed_to = required_text("licensed_to", licensed_to, 200)
                .map_err(|e| StoreError::invalid("licensed_to", e.message))?;
        }
        if let Some(vendor) = &body.vendor {
            c.vendor = text("vendor", vendor.as_deref(), 200)?;
        }
        c.license_type = body.license_type.unwrap_or(c.license_type);
        c.status = body.status.unwrap_or(c.status);
        c.seat_model = body.seat_model.unwrap_or(c.seat_model);
        c.seats_total = body.seats_total.unwrap_or(c.seats_total);
        if let Some(version) = &body.version {
            c.version = text("version", version.as_deref(), 100)?;
        }
        if let Some(cost) = &body.cost {
            c.cost = cost.clone();
        }
        c.purchased_on = body.purchased_on.unwrap_or(c.purchased_on);
        c.expires_on = body.expires_on.unwrap_or(c.expires_on);
        c.maintenance_expires_on = body
            .maintenance_expires_on
            .unwrap_or(c.maintenance_expires_on);
        if let Some(po_number) = &body.po_number {
            c.po_number = text("po_number", po_number.as_deref(), 100)?;
        }
        if let Some(notes) = &body.notes {
            c.notes = text("notes", notes.as_deref(), 10_000)?;
        }
        if let Some(policy) = &body.policy {
            c.policy = policy.apply_to(c.policy);
        }
        check_fields(&c)?;
        Ok(c)
    };
    let updated = state
        .store
        .update_license(&principal.actor, &principal.workspace_id, id, &apply)
        .await?;
    state
        .live
        .publish(&principal.workspace_id, id, "license.updated");
    Ok(convert::license(updated))
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
