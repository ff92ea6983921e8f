//! Contacts: the people seats are assigned to, and offboarding them.

use super::paging::{log_page, next_page, Cursor};
use super::view::{csrf, page, terminated_badge};
use super::{failed, ConsoleSession, Posted};
use crate::service::tracking as service;
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use leasehold_core::Permission;
use maud::html;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/contacts", get(contacts).post(create_contact))
        .route("/contacts/{id}/terminate", post(terminate_contact))
}

async fn contacts(
    State(state): State<AppState>,
    session: ConsoleSession,
    Query(at): Query<Cursor>,
) -> Response {
    let ws = &session.principal.workspace_id;
    let list = tri!(
        session,
        state
            .store
            .list_contacts(ws, &log_page(at.cursor.as_deref()))
            .await
    );
    let mut rows = Vec::new();
    let next = list.next_cursor;
    for contact in list.items {
        let seats = tri!(session, state.store.contact_seats(ws, &contact.id).await);
        rows.push((contact, seats));
    }
    page(
        "Contacts",
        Some(&session),
        html! {
            h1 { "Contacts" }
            div.table-wrap { table {
                thead { tr { th { "Name" } th { "Email" } th { "Status" } th { "Seats held" } th { span.muted { "Action" } } } }
                tbody { @for (c, seats) in &rows {
                    tr data-contact=(c.id) {
                        td { (c.name) } td { (c.email.as_deref().unwrap_or("—")) }
                        td { @if c.status == leasehold_core::ContactStatus::Terminated { span.badge.terminated { "Terminated" } } @else { "Active" } }
                        td { @for s in seats { a href={"/licenses/" (s.license_id)} { (s.device_name.as_deref().or(s.assignee_name.as_deref()).unwrap_or("seat")) } (terminated_badge(s)) br; } }
                        td { @if c.status == leasehold_core::ContactStatus::Active && session.can(Permission::LicenseManage) {
                            form.inline method="post" action={"/contacts/" (c.id) "/terminate"} data-confirm={"Offboard " (c.name) "? Their seats are flagged for reclaim."} {
                                (csrf(&session)) button.danger type="submit" { "Offboard" }
                            }
                        } }
                    }
                } }
            } }
            (next_page("/contacts", &[], next.as_deref()))
            @if session.can(Permission::LicenseAssign) {
                h2 { "Add a contact" }
                form method="post" action="/contacts" {
                    (csrf(&session))
                    label for="c-name" { "Name" } input #c-name name="name" required;
                    label for="c-email" { "Email" } input #c-email name="email" type="email";
                    p { button.primary type="submit" { "Add contact" } }
                }
            }
        },
    )
}

async fn create_contact(
    State(state): State<AppState>,
    Posted { session, form, .. }: Posted,
) -> Response {
    if let Err(e) = session.principal.require(Permission::LicenseAssign) {
        return failed(&session, e);
    }
    let name = form.get("name").map(String::as_str).unwrap_or_default();
    let email = form.get("email").map(String::as_str);
    let contact = match service::new_contact(name, email) {
        Ok(contact) => contact,
        Err(e) => return failed(&session, e),
    };
    tri!(
        session,
        state
            .store
            .create_contact(
                &session.principal.actor,
                &session.principal.workspace_id,
                contact
            )
            .await
    );
    Redirect::to("/contacts").into_response()
}

async fn terminate_contact(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted { session, .. }: Posted,
) -> Response {
    if let Err(e) = session.principal.require(Permission::LicenseManage) {
        return failed(&session, e);
    }
    let ws = session.principal.workspace_id.clone();
    tri!(
        session,
        state
            .store
            .terminate_contact(&session.principal.actor, &ws, &id)
            .await
    );
    for seat in tri!(session, state.store.contact_seats(&ws, &id).await) {
        state
            .live
            .publish(&ws, &seat.license_id, "contact.terminated");
    }
    Redirect::to("/contacts").into_response()
}

// ---- reminders and audit ----
