//! Webhooks, their delivery log, and the workspace's email settings.

use crate::convert;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery, Paging, Principal};
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use base64::Engine;
use leasehold_core::Permission;
use leasehold_proto::{
    CreateWebhook, Delivery, ErrorBody, NotificationSettings, Page, TestEmail,
    UpdateNotificationSettings, Webhook,
};
use rand::RngCore;

/// Validates and creates a webhook; answers it with its secret (shown this once).
pub(crate) async fn create(
    state: &AppState,
    principal: &Principal,
    body: CreateWebhook,
) -> ApiResult<Webhook> {
    principal.require(Permission::LicenseManage)?;
    let url = state
        .notifier
        .settings
        .check_webhook_url(body.url.trim())
        .map_err(|message| ApiError::invalid("url", message))?;
    if body.url.len() > 2000 {
        return Err(ApiError::invalid("url", "must be at most 2000 characters"));
    }
    let mut events: Vec<String> = Vec::new();
    for event in &body.events {
        if !leasehold_store::WEBHOOK_EVENTS.contains(&event.as_str()) {
            return Err(ApiError::invalid(
                "events",
                format!(
                    "unknown event {event:?}; one of {}",
                    leasehold_store::WEBHOOK_EVENTS.join(", ")
                ),
            ));
        }
        if !events.contains(event) {
            events.push(event.clone());
        }
    }
    if events.is_empty() {
        return Err(ApiError::invalid("events", "name at least one event"));
    }
    let secret = match body.secret {
        Some(secret) if secret.len() < 16 || secret.len() > 200 => {
            return Err(ApiError::invalid(
                "secret",
                "must be 16 to 200 characters (or left out to have one generated)",
            ))
        }
        Some(secret) => secret,
        None => {
            let mut bytes = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut bytes);
            format!(
                "whsec_{}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
            )
        }
    };
    let created = state
        .store
        .create_webhook(
            &principal.actor,
            &principal.workspace_id,
            url.as_str(),
            &events,
            state.master.encrypt(secret.as_bytes()),
        )
        .await?;
    Ok(convert::webhook(created, Some(secret)))
}

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
        Json(create(&state, &principal, body).await?),
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
        smtp_configured: state.notifier.email_enabled(),
    }))
}

/// Checks and stores email settings; shared with the console.
pub(crate) async fn update(
    state: &AppState,
    principal: &Principal,
    body: UpdateNotificationSettings,
) -> ApiResult<NotificationSettings> {
    principal.require(Permission::LicenseManage)?;
    let mut settings = state.store.notify_settings(&principal.workspace_id).await?;
    if let Some(emails) = body.emails {
        if emails.len() > 50 {
            return Err(ApiError::invalid("emails", "at most 50 addresses"));
        }
        let mut clean = Vec::new();
        for email in emails {
            let email = email.trim().to_string();
            if email.parse::<lettre::Address>().is_err() {
                return Err(ApiError::invalid(
                    "emails",
                    format!("{email:?} is not an email address"),
                ));
            }
            if !clean.contains(&email) {
                clean.push(email);
            }
        }
        settings.emails = clean;
    }
    if let Some(digest) = body.digest {
        settings.digest = digest;
    }
    let settings = state
        .store
        .update_notify_settings(&principal.actor, &principal.workspace_id, &settings)
        .await?;
    Ok(NotificationSettings {
        emails: settings.emails,
        digest: settings.digest,
        smtp_configured: state.notifier.email_enabled(),
    })
}

#[utoipa::path(patch, path = "/v1/notifications", tag = "notifications", request_body = UpdateNotificationSettings,
    security(("bearer" = [])),
    responses((status = 200, body = NotificationSettings), (status = 400, body = ErrorBody)))]
pub async fn update_settings(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<UpdateNotificationSettings>,
) -> ApiResult<Json<NotificationSettings>> {
    Ok(Json(update(&state, &principal, body).await?))
}

/// Sends a test email now, to `to` or the caller; answers what the SMTP server said.
pub(crate) async fn send_test(
    state: &AppState,
    principal: &Principal,
    to: Option<String>,
) -> ApiResult<String> {
    principal.require(Permission::LicenseManage)?;
    let to = match to.map(|t| t.trim().to_string()).filter(|t| !t.is_empty()) {
        Some(to) => to,
        None => match (principal.actor.kind, principal.actor.id.as_deref()) {
            ("member", Some(id)) => state.store.member(&principal.workspace_id, id).await?.email,
            _ => {
                return Err(ApiError::invalid(
                    "to",
                    "name the address to send the test to",
                ))
            }
        },
    };
    if to.parse::<lettre::Address>().is_err() {
        return Err(ApiError::invalid("to", "not an email address"));
    }
    let id = format!("test.{}", uuid::Uuid::now_v7());
    state
        .notifier
        .send_email(
            &id,
            std::slice::from_ref(&to),
            "Leasehold: SMTP test",
            "This is a test email from Leasehold. Reminder emails will arrive like this one.\n",
        )
        .await
        .map_err(|message| ApiError::new(StatusCode::BAD_GATEWAY, "SMTP_FAILED", message))?;
    Ok(to)
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
    send_test(&state, &principal, body.to).await?;
    Ok(StatusCode::NO_CONTENT)
}
