//! Webhooks, their delivery log, and the workspace's email settings.

use crate::convert;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiQuery, Paging, Principal};
use crate::service::notifications as service;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use leasehold_core::Permission;
use leasehold_proto::{
    CreateWebhook, Delivery, ErrorBody, NotificationSettings, Page, TestEmail,
    UpdateNotificationSettings, Webhook,
};

#[utoipa::path(post, path = "/v1/webhooks", tag = "notifications", request_body = CreateWebhook,
    security(("bearer" = [])),
    responses((status = 201, body = Webhook, description = "The webhook, with its secret shown this once"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn create_webhook(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateWebhook>,
) -> ApiResult<(StatusCode, Json<Webhook>)> {
    Ok((
        StatusCode::CREATED,
        Json(service::create(&state, &principal, body).await?),
    ))
}

#[utoipa::path(get, path = "/v1/webhooks", tag = "notifications", params(Paging), security(("bearer" = [])),
    responses((status = 200, body = Page<Webhook>), (status = 403, body = ErrorBody)))]
pub async fn list_webhooks(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(paging): ApiQuery<Paging>,
) -> ApiResult<Json<Page<Webhook>>> {
    principal.require(Permission::LicenseManage)?;
    let page = state
        .store
        .list_webhooks(&principal.workspace_id, &paging.request()?)
        .await?;
    Ok(Json(convert::page(page, |w| convert::webhook(w, None))))
}

#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "notifications", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Webhook), (status = 404, body = ErrorBody)))]
pub async fn get_webhook(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Webhook>> {
    principal.require(Permission::LicenseManage)?;
    let webhook = state.store.webhook(&principal.workspace_id, &id).await?;
    Ok(Json(convert::webhook(webhook, None)))
}

#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "notifications", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 204, description = "Deleted; its pending deliveries are dropped"),
        (status = 404, body = ErrorBody)))]
pub async fn delete_webhook(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    principal.require(Permission::LicenseManage)?;
    state
        .store
        .delete_webhook(&principal.actor, &principal.workspace_id, &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "notifications", params(("id" = String, Path), Paging),
    security(("bearer" = [])),
    responses((status = 200, body = Page<Delivery>), (status = 404, body = ErrorBody)))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiQuery(paging): ApiQuery<Paging>,
) -> ApiResult<Json<Page<Delivery>>> {
    principal.require(Permission::LicenseManage)?;
    let page = state
        .store
        .list_deliveries(&principal.workspace_id, &id, &paging.request()?)
        .await?;
    Ok(Json(convert::page(page, convert::delivery)))
}

#[utoipa::path(post, path = "/v1/webhooks/{id}/deliveries/{delivery_id}/resend", tag = "notifications",
    params(("id" = String, Path), ("delivery_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Delivery, description = "Queued again, with the same id"),
        (status = 404, body = ErrorBody)))]
pub async fn resend_delivery(
    State(state): State<AppState>,
    principal: Principal,
    Path((id, delivery_id)): Path<(String, String)>,
) -> ApiResult<Json<Delivery>> {
    principal.require(Permission::LicenseManage)?;
    let message = state
        .store
        .resend_delivery(&principal.actor, &principal.workspace_id, &id, &delivery_id)
        .await?;
    state.notifier.wake();
    Ok(Json(convert::delivery(message)))
}

#[utoipa::path(get, path = "/v1/notifications", tag = "notifications", security(("bearer" = [])),
    responses((status = 200, body = NotificationSettings), (status = 403, body = ErrorBody)))]
pub async fn get_settings(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<Json<NotificationSettings>> {
    principal.require(Permission::LicenseManage)?;
    let settings = state.store.notify_settings(&principal.workspace_id).await?;
    Ok(Json(NotificationSettings {
        emails: settings.emails,
        digest: settings.digest,
        usage_digest: settings.usage_digest,
        smtp_configured: state.notifier.email_enabled(),
    }))
}

#[utoipa::path(patch, path = "/v1/notifications", tag = "notifications", request_body = UpdateNotificationSettings,
    security(("bearer" = [])),
    responses((status = 200, body = NotificationSettings), (status = 400, body = ErrorBody)))]
pub async fn update_settings(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<UpdateNotificationSettings>,
) -> ApiResult<Json<NotificationSettings>> {
    Ok(Json(service::update(&state, &principal, body).await?))
}

#[utoipa::path(post, path = "/v1/notifications/test-email", tag = "notifications", request_body = TestEmail,
    security(("bearer" = [])),
    responses((status = 204, description = "The SMTP server accepted it"),
        (status = 400, body = ErrorBody), (status = 502, body = ErrorBody, description = "SMTP failed or is not configured")))]
pub async fn test_email(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<TestEmail>,
) -> ApiResult<StatusCode> {
    service::send_test(&state, &principal, body.to).await?;
    Ok(StatusCode::NO_CONTENT)
}
