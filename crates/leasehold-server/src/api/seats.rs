use crate::convert;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiQuery, Principal};
use crate::service::tracking as service;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use leasehold_core::Permission;
use leasehold_proto::{AssignSeat, ErrorBody, Page, Seat};
use leasehold_store::PageRequest;
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
        Json(service::assign_seat(&state, &principal, &license_id, body).await?),
    ))
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
/// an activation or lease is released by the admin, as the license's policy allows; a
/// borrow only with `force=true` (its offline license file stays valid to its end).
#[utoipa::path(post, path = "/v1/seats/{id}/reclaim", tag = "licenses", security(("bearer" = [])),
    params(("id" = String, Path, description = "seat id"),
        ("force" = Option<bool>, Query, description = "End a borrow before its time")),
    responses((status = 200, body = Seat), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn reclaim_seat(
    State(state): State<AppState>,
    principal: Principal,
    Path(seat_id): Path<String>,
    ApiQuery(query): ApiQuery<ReclaimQuery>,
) -> ApiResult<Json<Seat>> {
    Ok(Json(
        service::reclaim_seat(&state, &principal, &seat_id, query.force.unwrap_or(false)).await?,
    ))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReclaimQuery {
    force: Option<bool>,
}
