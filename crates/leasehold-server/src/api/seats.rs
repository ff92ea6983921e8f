use super::optional_text;
use crate::convert;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery, Principal};
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use leasehold_core::{keys, Permission};
use leasehold_proto::{AssignSeat, ErrorBody, Page, Seat};
use leasehold_store::{NewAssignment, PageRequest};
use serde::Deserialize;

/// Assigns a seat to a contact, or to a person's name and/or a device.
/// A full license answers 409 `SEAT_OVER_ALLOCATED`.
#[utoipa::path(post, path = "/v1/licenses/{id}/seats", tag = "licenses", request_body = AssignSeat,
    security(("bearer" = [])), params(("id" = String, Path, description = "license id")),
    responses((status = 201, body = Seat), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn assign_seat(
    State(state): State<AppState>,
    principal: Principal,
    Path(license_id): Path<String>,
    ApiJson(body): ApiJson<AssignSeat>,
) -> ApiResult<(StatusCode, Json<Seat>)> {
    Ok((
        StatusCode::CREATED,
        Json(assign(&state, &principal, &license_id, body).await?),
    ))
}

/// Assigns a seat (the API and the console both come here).
pub(crate) async fn assign(
    state: &AppState,
    principal: &Principal,
    license_id: &str,
    body: AssignSeat,
) -> ApiResult<Seat> {
    principal.require(Permission::LicenseAssign)?;
    let contact_id = optional_text("contact_id", body.contact_id.as_deref(), 100)?;
    let assignee_name = optional_text("assignee_name", body.assignee_name.as_deref(), 200)?;
    let device_name = optional_text("device_name", body.device_name.as_deref(), 200)?;
    if contact_id.is_none() && assignee_name.is_none() && device_name.is_none() {
        return Err(ApiError::invalid(
            "assignee_name",
            "name a contact_id, an assignee_name or a device_name",
        ));
    }
    let serial = match body
        .seat_serial_key
        .as_deref()
        .map(str::trim)
        .filter(|k| !k.is_empty())
    {
        Some(key) => {
            Some(keys::normalize_key(key).map_err(|m| ApiError::invalid("seat_serial_key", m))?)
        }
        None => None,
    };
    let assignment = NewAssignment {
        contact_id,
        assignee_name,
        device_name,
        serial_key_enc: serial
            .as_deref()
            .map(|k| state.master.encrypt(k.as_bytes())),
        serial_key_masked: serial.as_deref().map(keys::mask_key),
        activated_on: body.activated_on,
    };
    let seat = state
        .store
        .assign_seat(
            &principal.actor,
            &principal.workspace_id,
            license_id,
            assignment,
        )
        .await?;
    state
        .live
        .publish(&principal.workspace_id, license_id, "seat.assigned");
    Ok(convert::seat(seat))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SeatQuery {
    /// Only seats held now.
    pub active: Option<bool>,
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

/// The license's seat ledger, newest first.
#[utoipa::path(get, path = "/v1/licenses/{id}/seats", tag = "licenses", params(("id" = String, Path), SeatQuery),
    security(("bearer" = [])),
    responses((status = 200, body = Page<Seat>), (status = 404, body = ErrorBody)))]
pub async fn list_seats(
    State(state): State<AppState>,
    principal: Principal,
    Path(license_id): Path<String>,
    ApiQuery(query): ApiQuery<SeatQuery>,
) -> ApiResult<Json<Page<Seat>>> {
    principal.require(Permission::LicenseView)?;
    let paging = crate::extract::Paging {
        cursor: query.cursor,
        limit: query.limit,
    };
    let page: PageRequest = paging.request()?;
    let seats = state
        .store
        .list_seats(
            &principal.workspace_id,
            &license_id,
            query.active.unwrap_or(false),
            &page,
        )
        .await?;
    Ok(Json(convert::page(seats, convert::seat)))
}

/// Ends a seat: an assignment is reclaimed (kept in the ledger with its reclaimed date);
/// an activation or lease is released by the admin, as the license's policy allows.
#[utoipa::path(post, path = "/v1/seats/{id}/reclaim", tag = "licenses", security(("bearer" = [])),
    params(("id" = String, Path, description = "seat id")),
    responses((status = 200, body = Seat), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn reclaim_seat(
    State(state): State<AppState>,
    principal: Principal,
    Path(seat_id): Path<String>,
) -> ApiResult<Json<Seat>> {
    Ok(Json(reclaim(&state, &principal, &seat_id).await?))
}

/// Reclaims a seat (the API and the console both come here).
pub(crate) async fn reclaim(
    state: &AppState,
    principal: &Principal,
    seat_id: &str,
) -> ApiResult<Seat> {
    principal.require(Permission::LicenseAssign)?;
    let seat = state
        .store
        .reclaim_seat(&principal.actor, &principal.workspace_id, seat_id)
        .await?;
    state
        .live
        .publish(&principal.workspace_id, &seat.license_id, "seat.reclaimed");
    Ok(convert::seat(seat))
}
