use crate::convert;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiQuery, Paging, Principal};
use crate::service::{optional_text, required_text};
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use leasehold_core::Permission;
use leasehold_proto::{Application, CreateApplication, ErrorBody, Page, UpdateApplication};
use leasehold_store::ApplicationChange;

#[utoipa::path(post, path = "/v1/applications", tag = "applications", request_body = CreateApplication,
    security(("bearer" = [])),
    responses((status = 201, body = Application), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn create_application(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateApplication>,
) -> ApiResult<(StatusCode, Json<Application>)> {
    principal.require(Permission::LicenseManage)?;
    let application = crate::service::tracking::new_application(
        &body.name,
        body.vendor.as_deref(),
        body.deployment_model,
    )?;
    let created = state
        .store
        .create_application(&principal.actor, &principal.workspace_id, application)
        .await?;
    Ok((StatusCode::CREATED, Json(convert::application(created))))
}

#[utoipa::path(get, path = "/v1/applications", tag = "applications", params(Paging), security(("bearer" = [])),
    responses((status = 200, body = Page<Application>), (status = 401, body = ErrorBody)))]
pub async fn list_applications(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(paging): ApiQuery<Paging>,
) -> ApiResult<Json<Page<Application>>> {
    principal.require(Permission::LicenseView)?;
    let page = state
        .store
        .list_applications(&principal.workspace_id, &paging.request()?)
        .await?;
    Ok(Json(convert::page(page, convert::application)))
}

#[utoipa::path(get, path = "/v1/applications/{id}", tag = "applications", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Application), (status = 404, body = ErrorBody)))]
pub async fn get_application(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Application>> {
    principal.require(Permission::LicenseView)?;
    let application = state
        .store
        .application(&principal.workspace_id, &id)
        .await?;
    Ok(Json(convert::application(application)))
}

#[utoipa::path(patch, path = "/v1/applications/{id}", tag = "applications", request_body = UpdateApplication,
    security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = Application), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn update_application(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateApplication>,
) -> ApiResult<Json<Application>> {
    principal.require(Permission::LicenseManage)?;
    let change = ApplicationChange {
        name: body
            .name
            .as_deref()
            .map(|n| required_text("name", n, 200))
            .transpose()?,
        vendor: body
            .vendor
            .map(|v| optional_text("vendor", v.as_deref(), 200))
            .transpose()?,
        deployment_model: body.deployment_model,
    };
    let updated = state
        .store
        .update_application(&principal.actor, &principal.workspace_id, &id, change)
        .await?;
    Ok(Json(convert::application(updated)))
}

/// Deletes an application that has no licenses left (409 otherwise).
#[utoipa::path(delete, path = "/v1/applications/{id}", tag = "applications", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete_application(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    principal.require(Permission::LicenseManage)?;
    state
        .store
        .delete_application(&principal.actor, &principal.workspace_id, &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
