//! Reminders and the audit log.

use super::paging::{log_page, next_page, whole, Cursor};
use super::view::{csrf, page, when};
use super::{failed, ConsoleSession, Posted};
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use leasehold_core::Permission;
use leasehold_store::{EventFilter, LicenseFilter, ReminderFilter};
use maud::html;
use serde::Deserialize;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/reminders", get(reminders))
        .route("/reminders/{id}/dismiss", post(dismiss_reminder))
        .route("/audit", get(audit))
}

async fn reminders(
    State(state): State<AppState>,
    session: ConsoleSession,
    Query(at): Query<Cursor>,
) -> Response {
    let ws = &session.principal.workspace_id;
    let list = tri!(
        session,
        state
            .store
            .list_reminders(
                ws,
                &ReminderFilter::default(),
                &log_page(at.cursor.as_deref())
            )
            .await
    );
    let store = &state.store;
    let licenses = tri!(
        session,
        whole(|page| async move {
            store
                .list_licenses(ws, &LicenseFilter::default(), &page)
                .await
        })
        .await
    );
    let name = |id: &str| {
        licenses
            .iter()
            .find(|l| l.id == id)
            .map(|l| format!("{} · {}", l.licensed_to, l.key_masked))
            .unwrap_or_else(|| id.to_string())
    };
    page(
        "Reminders",
        Some(&session),
        html! {
            h1 { "Upcoming reminders" }
            div.table-wrap { table {
                thead { tr { th { "Due" } th { "What" } th { "License" } th { "State" } th { "Email" } th { span.muted { "Action" } } } }
                tbody { @for r in &list.items {
                    tr data-reminder=(r.id) {
                        td { (r.due_on) }
                        td { @if r.kind == leasehold_core::ReminderKind::Expiry { "Expiry" } @else { "Maintenance expiry" } }
                        td { a href={"/licenses/" (r.license_id)} { (name(&r.license_id)) } }
                        td { (r.state.as_str()) }
                        td.delivery { (r.delivery.as_deref().unwrap_or("—")) }
                        td { @if r.state == leasehold_core::ReminderState::Pending && session.can(Permission::LicenseManage) {
                            form.inline method="post" action={"/reminders/" (r.id) "/dismiss"} { (csrf(&session)) button type="submit" { "Dismiss" } }
                        } }
                    }
                } }
            } }
            (next_page("/reminders", &[], list.next_cursor.as_deref()))
        },
    )
}

async fn dismiss_reminder(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted { session, .. }: Posted,
) -> Response {
    if let Err(e) = session.principal.require(Permission::LicenseManage) {
        return failed(&session, e);
    }
    tri!(
        session,
        state
            .store
            .dismiss_reminder(
                &session.principal.actor,
                &session.principal.workspace_id,
                &id
            )
            .await
    );
    Redirect::to("/reminders").into_response()
}

#[derive(Deserialize)]
struct AuditQuery {
    license_id: Option<String>,
    action: Option<String>,
    cursor: Option<String>,
}

async fn audit(
    State(state): State<AppState>,
    session: ConsoleSession,
    Query(q): Query<AuditQuery>,
) -> Response {
    let filter = EventFilter {
        license_id: q.license_id.clone().filter(|s| !s.is_empty()),
        action: q.action.clone().filter(|s| !s.is_empty()),
        scope: session.principal.role.audit_scope(),
    };
    let events = tri!(
        session,
        state
            .store
            .list_events(
                &session.principal.workspace_id,
                &filter,
                &log_page(q.cursor.as_deref())
            )
            .await
    );
    let license_id = q.license_id.unwrap_or_default();
    let action = q.action.unwrap_or_default();
    let query = [
        ("license_id", license_id.as_str()),
        ("action", action.as_str()),
    ];
    page(
        "Audit log",
        Some(&session),
        html! {
            h1 { "Audit log" }
            form method="get" action="/audit" {
                div.grid2 {
                    div { label for="q-license" { "License id" } input #q-license name="license_id" value=(license_id); }
                    div { label for="q-action" { "Action (e.g. seat.assigned)" } input #q-action name="action" value=(action); }
                }
                p { button type="submit" { "Filter" } }
            }
            div.table-wrap { table {
                thead { tr { th { "When" } th { "Who" } th { "Action" } th { "Subject" } } }
                tbody { @for e in &events.items {
                    tr data-event=(e.id) { td { (when(Some(e.created_at))) } td { (e.actor_label) " (" (e.actor_kind) ")" } td { (e.action) } td { (e.subject_type) " " code { (e.subject_id) } } }
                } }
            } }
            (next_page("/audit", &query, events.next_cursor.as_deref()))
        },
    )
}
