use crate::convert;
use crate::error::ApiResult;
use crate::extract::{ApiQuery, Paging, Principal};
use crate::AppState;
use axum::extract::{Path, State};
use axum::Json;
use chrono::NaiveDate;
use leasehold_core::{Permission, ReminderState};
use leasehold_proto::{ErrorBody, Event, Page, Reminder};
use leasehold_store::{EventFilter, ReminderFilter};
use serde::Deserialize;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReminderQuery {
    pub license_id: Option<String>,
    /// Only reminders due on or before this day.
    pub due_before: Option<NaiveDate>,
    pub state: Option<ReminderState>,
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

/// Reminders, earliest due first.
#[utoipa::path(get, path = "/v1/reminders", tag = "audit", params(ReminderQuery), security(("bearer" = [])),
    responses((status = 200, body = Page<Reminder>), (status = 400, body = ErrorBody)))]
pub async fn list_reminders(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<ReminderQuery>,
) -> ApiResult<Json<Page<Reminder>>> {
    principal.require(Permission::LicenseView)?;
    let paging = Paging {
        cursor: query.cursor,
        limit: query.limit,
    };
    let filter = ReminderFilter {
        license_id: query.license_id,
        due_before: query.due_before,
        state: query.state,
    };
    let page = state
        .store
        .list_reminders(&principal.workspace_id, &filter, &paging.request()?)
        .await?;
    Ok(Json(convert::page(page, convert::reminder)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    pub license_id: Option<String>,
    /// e.g. `license.updated`, `seat.assigned`.
    pub action: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

/// The audit log, newest first.
#[utoipa::path(get, path = "/v1/events", tag = "audit", params(EventQuery), security(("bearer" = [])),
    responses((status = 200, body = Page<Event>), (status = 400, body = ErrorBody)))]
pub async fn list_events(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<EventQuery>,
) -> ApiResult<Json<Page<Event>>> {
    principal.require(Permission::LicenseView)?;
    let paging = Paging {
        cursor: query.cursor,
        limit: query.limit,
    };
    let filter = EventFilter {
        license_id: query.license_id,
        action: query.action,
        scope: principal.role.audit_scope(),
    };
    let page = state
        .store
        .list_events(&principal.workspace_id, &filter, &paging.request()?)
        .await?;
    Ok(Json(convert::page(page, convert::event)))
}

/// Dismisses a reminder (it stays listed, as `dismissed`).
#[utoipa::path(post, path = "/v1/reminders/{id}/dismiss", tag = "audit", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Reminder), (status = 404, body = ErrorBody)))]
pub async fn dismiss_reminder(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Reminder>> {
    principal.require(Permission::LicenseManage)?;
    let reminder = state
        .store
        .dismiss_reminder(&principal.actor, &principal.workspace_id, &id)
        .await?;
    Ok(Json(convert::reminder(reminder)))
}
