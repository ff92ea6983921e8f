//! Console: webhooks and their delivery log, reminder email settings, the SMTP test.

use super::failed;
use super::paging::{log_page, next_page, whole, Cursor};
use super::view::{csrf, page, when};
use super::{ConsoleSession, Posted};
use crate::service::notifications;
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use leasehold_core::Permission;
use leasehold_proto::{CreateWebhook, UpdateNotificationSettings};
use leasehold_store::WEBHOOK_EVENTS;
use maud::{html, Markup};

/// A form's fields; repeated names (event checkboxes) all kept.
type Fields = Vec<(String, String)>;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/notifications", get(overview).post(save_settings))
        .route("/notifications/test-email", post(test_email))
        .route("/webhooks", post(create_webhook))
        .route("/webhooks/{id}", get(deliveries))
        .route("/webhooks/{id}/delete", post(delete_webhook))
        .route("/webhooks/{id}/deliveries/{delivery}/resend", post(resend))
}

/// Checks the permission every form here needs (the CSRF token is checked by [`Posted`]).
fn guard(session: &ConsoleSession) -> Result<(), Box<Response>> {
    session
        .principal
        .require(Permission::LicenseManage)
        .map_err(|e| Box::new(failed(session, e)))
}

fn field<'a>(fields: &'a Fields, name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

async fn overview(State(state): State<AppState>, session: ConsoleSession) -> Response {
    render(&state, &session, None).await
}

/// The page, with a notice on top (a new webhook's secret, the SMTP test's outcome).
async fn render(state: &AppState, session: &ConsoleSession, notice: Option<Markup>) -> Response {
    if let Err(e) = session.principal.require(Permission::LicenseManage) {
        return failed(session, e);
    }
    let ws = &session.principal.workspace_id;
    let settings = match state.store.notify_settings(ws).await {
        Ok(settings) => settings,
        Err(e) => return failed(session, e.into()),
    };
    let store = &state.store;
    let hooks = match whole(|page| async move { store.list_webhooks(ws, &page).await }).await {
        Ok(hooks) => hooks,
        Err(e) => return failed(session, e.into()),
    };
    page(
        "Notifications",
        Some(session),
        html! {
            h1 { "Notifications" }
            @if let Some(notice) = notice { (notice) }
            h2 { "Reminder emails" }
            @if state.notifier.email_enabled() {
                p.muted { "Reminders are emailed on their due day to the members who manage licenses, and to these addresses." }
            } @else {
                p.error role="alert" { "SMTP is not configured (LEASEHOLD_SMTP_URL): reminder emails wait until it is." }
            }
            form method="post" action="/notifications" {
                (csrf(session))
                label for="n-emails" { "Extra addresses (comma-separated)" }
                input #n-emails name="emails" value=(settings.emails.join(", "));
                label.check { input #n-digest type="checkbox" name="digest" value="on" checked[settings.digest]; " One daily digest instead of an email per reminder" }
                label.check { input #n-usage-digest type="checkbox" name="usage_digest" value="on" checked[settings.usage_digest]; " A monthly usage digest: the licenses to reduce or increase before renewal" }
                p { button.primary type="submit" { "Save" } }
            }
            form method="post" action="/notifications/test-email" {
                (csrf(session))
                button #smtp-test type="submit" { "Send a test email to me" }
            }
            h2 { "Webhooks" }
            div.table-wrap { table {
                thead { tr { th { "URL" } th { "Events" } th { "Created" } th { span.muted { "Action" } } } }
                tbody { @for w in &hooks {
                    tr data-webhook=(w.id) {
                        td { a href={"/webhooks/" (w.id)} { (w.url) } }
                        td { (w.event_list().join(", ")) }
                        td { (when(Some(w.created_at))) }
                        td { form.inline method="post" action={"/webhooks/" (w.id) "/delete"} data-confirm={"Delete the webhook to " (w.url) "?"} {
                            (csrf(session)) button.danger type="submit" { "Delete" }
                        } }
                    }
                } }
            } }
            h3 { "Add a webhook" }
            form method="post" action="/webhooks" {
                (csrf(session))
                label for="w-url" { "URL" }
                input #w-url name="url" type="url" required placeholder="https://example.com/leasehold";
                fieldset {
                    legend { "Events" }
                    @for event in WEBHOOK_EVENTS {
                        label.check { input type="checkbox" name="events" value=(event) checked; " " (event) }
                    }
                }
                p { button.primary type="submit" { "Add webhook" } }
            }
        },
    )
}

async fn save_settings(
    State(state): State<AppState>,
    Posted {
        session, fields, ..
    }: Posted,
) -> Response {
    if let Err(refused) = guard(&session) {
        return *refused;
    }
    let emails: Vec<String> = field(&fields, "emails")
        .unwrap_or_default()
        .split([',', '\n', ' '])
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(String::from)
        .collect();
    let body = UpdateNotificationSettings {
        emails: Some(emails),
        digest: Some(field(&fields, "digest").is_some()),
        usage_digest: Some(field(&fields, "usage_digest").is_some()),
    };
    match notifications::update(&state, &session.principal, body).await {
        Ok(_) => Redirect::to("/notifications").into_response(),
        Err(e) => failed(&session, e),
    }
}

async fn test_email(
    State(state): State<AppState>,
    Posted {
        session, fields: _, ..
    }: Posted,
) -> Response {
    if let Err(refused) = guard(&session) {
        return *refused;
    }
    let notice = match notifications::send_test(&state, &session.principal, None).await {
        Ok(to) => html! { p.notice role="status" { "Test email sent to " (to) "." } },
        Err(e) => html! { p.error role="alert" { "The test email failed: " (e.message) } },
    };
    render(&state, &session, Some(notice)).await
}

async fn create_webhook(
    State(state): State<AppState>,
    Posted {
        session, fields, ..
    }: Posted,
) -> Response {
    if let Err(refused) = guard(&session) {
        return *refused;
    }
    let body = CreateWebhook {
        url: field(&fields, "url").unwrap_or_default().to_string(),
        events: fields
            .iter()
            .filter(|(k, _)| k == "events")
            .map(|(_, v)| v.clone())
            .collect(),
        secret: None,
    };
    match notifications::create(&state, &session.principal, body).await {
        Ok(created) => {
            let secret = created.secret.unwrap_or_default();
            let notice = html! {
                div.notice role="status" {
                    p { "Webhook added. Its signing secret, shown this once:" }
                    p { code #webhook-secret { (secret) } }
                }
            };
            render(&state, &session, Some(notice)).await
        }
        Err(e) => {
            let notice = html! { p.error role="alert" { (e.message) } };
            render(&state, &session, Some(notice)).await
        }
    }
}

async fn delete_webhook(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted {
        session, fields: _, ..
    }: Posted,
) -> Response {
    if let Err(refused) = guard(&session) {
        return *refused;
    }
    match state
        .store
        .delete_webhook(
            &session.principal.actor,
            &session.principal.workspace_id,
            &id,
        )
        .await
    {
        Ok(()) => Redirect::to("/notifications").into_response(),
        Err(e) => failed(&session, e.into()),
    }
}

async fn deliveries(
    State(state): State<AppState>,
    session: ConsoleSession,
    Path(id): Path<String>,
    Query(at): Query<Cursor>,
) -> Response {
    if let Err(e) = session.principal.require(Permission::LicenseManage) {
        return failed(&session, e);
    }
    let ws = &session.principal.workspace_id;
    let webhook = match state.store.webhook(ws, &id).await {
        Ok(webhook) => webhook,
        Err(e) => return failed(&session, e.into()),
    };
    let log = match state
        .store
        .list_deliveries(ws, &id, &log_page(at.cursor.as_deref()))
        .await
    {
        Ok(page) => page,
        Err(e) => return failed(&session, e.into()),
    };
    page(
        "Deliveries",
        Some(&session),
        html! {
            h1 { "Deliveries to " (webhook.url) }
            p { a href="/notifications" { "← Notifications" } }
            div.table-wrap { table {
                thead { tr { th { "Event" } th { "Id" } th { "State" } th { "Attempts" } th { "Last answer" } th { "Queued" } th { "Delivered" } th { span.muted { "Action" } } } }
                tbody { @for d in &log.items {
                    tr data-delivery=(d.id) {
                        td { (d.event_type) }
                        td { code { (d.id) } }
                        td { span class={"badge " (d.state)} { (d.state) } }
                        td { (d.attempts) }
                        td { (d.last_status.map(|s| s.to_string()).or(d.last_error.clone()).unwrap_or_else(|| "—".into())) }
                        td { (when(Some(d.created_at))) }
                        td { (when(d.delivered_at)) }
                        td { form.inline method="post" action={"/webhooks/" (id) "/deliveries/" (d.id) "/resend"} {
                            (csrf(&session)) button type="submit" { "Re-send" }
                        } }
                    }
                } }
            } }
            (next_page(&format!("/webhooks/{id}"), &[], log.next_cursor.as_deref()))
        },
    )
}

async fn resend(
    State(state): State<AppState>,
    Path((id, delivery)): Path<(String, String)>,
    Posted {
        session, fields: _, ..
    }: Posted,
) -> Response {
    if let Err(refused) = guard(&session) {
        return *refused;
    }
    match state
        .store
        .resend_delivery(
            &session.principal.actor,
            &session.principal.workspace_id,
            &id,
            &delivery,
        )
        .await
    {
        Ok(_) => {
            state.notifier.wake();
            Redirect::to(&format!("/webhooks/{id}")).into_response()
        }
        Err(e) => failed(&session, e.into()),
    }
}
