//! Webhooks and the workspace's email settings.

use crate::convert;
use crate::error::{ApiError, ApiResult};
use crate::extract::Principal;
use crate::AppState;
use axum::http::StatusCode;
use base64::Engine;
use leasehold_core::Permission;
use leasehold_proto::{CreateWebhook, NotificationSettings, UpdateNotificationSettings, Webhook};
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
    if let Some(usage_digest) = body.usage_digest {
        settings.usage_digest = usage_digest;
    }
    let settings = state
        .store
        .update_notify_settings(&principal.actor, &principal.workspace_id, &settings)
        .await?;
    Ok(NotificationSettings {
        emails: settings.emails,
        digest: settings.digest,
        usage_digest: settings.usage_digest,
        smtp_configured: state.notifier.email_enabled(),
    })
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
