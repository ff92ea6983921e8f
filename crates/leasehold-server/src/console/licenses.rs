//! A license: create and edit it, reveal its key, and its page with Manage Seats.

use super::applications::{all_applications, license_card};
use super::license_form::{form_error, license_form_page, license_values, read_license_form};
use super::overview::{holders_table, live_seats};
use super::paging::{log_page, next_page, whole, Cursor};
use super::view::{self, csrf, holder, page, status_badge, terminated_badge, when};
use super::{failed, ConsoleSession, FormData, Posted};
use crate::error::ApiError;
use crate::service::tracking as service;
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use leasehold_core::{Permission, SeatKind};
use leasehold_proto::{AssignSeat, CreateLicense, UpdateLicense};
use leasehold_store::{License, Seat};
use maud::{html, Markup};
use serde::Deserialize;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/licenses/new", get(new_license))
        .route("/licenses", post(create_license))
        .route("/licenses/{id}", get(license))
        .route("/licenses/{id}/fragment", get(license_fragment))
        .route(
            "/licenses/{id}/edit",
            get(edit_license).post(update_license),
        )
        .route("/licenses/{id}/delete", post(delete_license))
        .route("/licenses/{id}/reveal", post(reveal_key))
        .route("/licenses/{id}/seats", post(assign_seat))
        .route("/seats/{id}/reclaim", post(reclaim_seat))
}

#[derive(Deserialize)]
struct NewLicenseQuery {
    application_id: Option<String>,
}

async fn new_license(
    State(state): State<AppState>,
    session: ConsoleSession,
    Query(q): Query<NewLicenseQuery>,
) -> Response {
    if let Err(e) = session.principal.require(Permission::LicenseManage) {
        return failed(&session, e);
    }
    let apps = tri!(
        session,
        all_applications(&state, &session.principal.workspace_id).await
    );
    let mut values = FormData::new();
    values.insert(
        "application_id".into(),
        q.application_id.unwrap_or_default(),
    );
    license_form_page(&session, &apps, None, &values, None, StatusCode::OK)
}

async fn create_license(
    State(state): State<AppState>,
    Posted { session, form, .. }: Posted,
) -> Response {
    let ws = session.principal.workspace_id.clone();
    let apps = tri!(session, all_applications(&state, &ws).await);
    let currency = tri!(session, state.store.workspace(&ws).await).currency;
    let invalid = |error: (String, String)| {
        license_form_page(
            &session,
            &apps,
            None,
            &form,
            Some(error),
            StatusCode::BAD_REQUEST,
        )
    };
    let body: CreateLicense = match read_license_form(&form, &currency, false) {
        Ok(body) => body,
        Err(error) => return invalid(error),
    };
    match service::create_license(&state, &session.principal, body).await {
        Ok(created) => page(
            "License created",
            Some(&session),
            html! {
                h1 { "License created" }
                p.notice { "The full key is shown this once; later it is masked." }
                p { "Key: " code.key #new-key { (created.key.as_deref().unwrap_or("")) } }
                p { a.button href={"/licenses/" (created.id)} { "Open the license" } }
            },
        ),
        Err(error) => match form_error(&error) {
            Some(field_error) => invalid(field_error),
            None => failed(&session, error),
        },
    }
}

async fn edit_license(
    State(state): State<AppState>,
    session: ConsoleSession,
    Path(id): Path<String>,
) -> Response {
    if let Err(e) = session.principal.require(Permission::LicenseManage) {
        return failed(&session, e);
    }
    let license = tri!(
        session,
        state
            .store
            .license(&session.principal.workspace_id, &id)
            .await
    );
    license_form_page(
        &session,
        &[],
        Some(&license),
        &license_values(&license),
        None,
        StatusCode::OK,
    )
}

async fn update_license(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted { session, form, .. }: Posted,
) -> Response {
    let ws = session.principal.workspace_id.clone();
    let license = tri!(session, state.store.license(&ws, &id).await);
    let currency = license
        .cost_currency
        .clone()
        .unwrap_or(tri!(session, state.store.workspace(&ws).await).currency);
    let invalid = |error: (String, String)| {
        license_form_page(
            &session,
            &[],
            Some(&license),
            &form,
            Some(error),
            StatusCode::BAD_REQUEST,
        )
    };
    let body: UpdateLicense = match read_license_form(&form, &currency, true) {
        Ok(body) => body,
        Err(error) => return invalid(error),
    };
    match service::update_license(&state, &session.principal, &id, body).await {
        Ok(_) => Redirect::to(&format!("/licenses/{id}")).into_response(),
        Err(error) => match form_error(&error) {
            Some(field_error) => invalid(field_error),
            None => failed(&session, error),
        },
    }
}

async fn delete_license(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted { session, .. }: Posted,
) -> Response {
    if let Err(e) = session.principal.require(Permission::LicenseManage) {
        return failed(&session, e);
    }
    let ws = session.principal.workspace_id.clone();
    let license = tri!(session, state.store.license(&ws, &id).await);
    tri!(
        session,
        state
            .store
            .delete_license(&session.principal.actor, &ws, &id)
            .await
    );
    state.live.publish(&ws, &id, "license.deleted");
    Redirect::to(&format!("/applications/{}", license.application_id)).into_response()
}

async fn reveal_key(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted { session, .. }: Posted,
) -> Response {
    if let Err(e) = session.principal.require(Permission::LicenseManage) {
        return failed(&session, e);
    }
    let sealed = tri!(
        session,
        state
            .store
            .reveal_license_key(
                &session.principal.actor,
                &session.principal.workspace_id,
                &id
            )
            .await
    );
    let Ok(key) = state.master.decrypt_string(&sealed) else {
        return failed(&session, ApiError::internal());
    };
    license_page(&state, &session, &id, None, Some(key), None, StatusCode::OK).await
}

// ---- a license: card, live holders, Manage Seats ----

async fn license(
    State(state): State<AppState>,
    session: ConsoleSession,
    Path(id): Path<String>,
    Query(at): Query<Cursor>,
) -> Response {
    let ledger = at.cursor.as_deref();
    license_page(&state, &session, &id, ledger, None, None, StatusCode::OK).await
}

async fn license_fragment(
    State(state): State<AppState>,
    session: ConsoleSession,
    Path(id): Path<String>,
    Query(at): Query<Cursor>,
) -> Response {
    let ws = &session.principal.workspace_id;
    let license = tri!(session, state.store.license(ws, &id).await);
    let ledger = tri!(
        session,
        Ledger::read(&state, ws, &id, at.cursor.as_deref()).await
    );
    let currency = tri!(session, state.store.workspace(ws).await).currency;
    view::respond(
        StatusCode::OK,
        seats_section(&session, &license, &ledger, &currency),
    )
}

/// What Manage Seats lists: every live seat, then one page of released ones (newest
/// first), with the cursor of the page after it.
struct Ledger {
    rows: Vec<Seat>,
    at: Option<String>,
    next: Option<String>,
    /// Who waits for a seat of a floating license, head first.
    waiters: Vec<leasehold_store::Waiter>,
}

impl Ledger {
    async fn read(
        state: &AppState,
        ws: &str,
        license_id: &str,
        at: Option<&str>,
    ) -> leasehold_store::Result<Ledger> {
        let mut rows = live_seats(state, ws, license_id).await?;
        let page = state
            .store
            .list_seats(ws, license_id, false, &log_page(at))
            .await?;
        rows.extend(page.items.into_iter().filter(|s| s.released_at.is_some()));
        Ok(Ledger {
            rows,
            at: at.map(String::from),
            next: page.next_cursor,
            waiters: state.store.waiters(ws, license_id).await?,
        })
    }
}

async fn license_page(
    state: &AppState,
    session: &ConsoleSession,
    id: &str,
    ledger: Option<&str>,
    revealed: Option<String>,
    assign_error: Option<String>,
    status: StatusCode,
) -> Response {
    let ws = &session.principal.workspace_id;
    let license = tri!(session, state.store.license(ws, id).await);
    let ledger = tri!(session, Ledger::read(state, ws, id, ledger).await);
    let store = &state.store;
    let contacts = tri!(
        session,
        whole(|page| async move { store.list_contacts(ws, &page).await }).await
    );
    let fragment = match &ledger.at {
        Some(at) => format!(
            "/licenses/{}/fragment?{}",
            license.id,
            serde_urlencoded::to_string([("cursor", at)]).unwrap_or_default()
        ),
        None => format!("/licenses/{}/fragment", license.id),
    };
    let currency = tri!(session, state.store.workspace(ws).await).currency;
    let usage = tri!(session, super::usage::last_days(state, ws, id).await);
    let assignable = session.can(Permission::LicenseAssign)
        && license.seat_model == leasehold_core::SeatModel::Dedicated;
    view::respond(
        status,
        view::frame(
            &license.licensed_to,
            Some(session),
            html! {
                p { a href={"/applications/" (license.application_id)} { "← Licenses" } }
                h1 { (license.licensed_to) " " (status_badge(&license)) }
                @if let Some(key) = &revealed { p.notice { "Key: " code.key #revealed-key { (key) } " (this reveal is in the audit log)" } }
                section #seats data-live-src=(fragment)
                    data-live-stream={"/v1/events/stream?license_id=" (license.id)} aria-live="polite" {
                    (seats_section(session, &license, &ledger, &currency))
                }
                section #usage {
                    h2 { "Usage, last " (super::usage::CHART_DAYS) " days" }
                    (super::usage::usage_chart(&usage))
                    p { a href="/usage" { "Usage against cost, every license" } }
                }
                @if assignable {
                    h2 { "Assign Seat" }
                    @if let Some(message) = &assign_error { p.error #assign-error role="alert" { (message) } }
                    form #assign method="post" action={"/licenses/" (license.id) "/seats"} {
                        (csrf(session))
                        div.grid2 {
                            div { label for="a-contact" { "Contact" }
                                select #a-contact name="contact_id" {
                                    option value="" { "— free-form name or device —" }
                                    @for c in contacts.iter().filter(|c| c.status == leasehold_core::ContactStatus::Active) {
                                        option value=(c.id) { (c.name) }
                                    }
                                }
                            }
                            div { label for="a-name" { "Assignee name" } input #a-name name="assignee_name"; }
                            div { label for="a-device" { "Device name" } input #a-device name="device_name"; }
                            div { label for="a-serial" { "Seat serial key" } input #a-serial name="seat_serial_key" autocomplete="off"; }
                            div { label for="a-date" { "Activated date" } input #a-date name="activated_on" type="date"; }
                        }
                        p { button.primary type="submit" { "Assign Seat" } }
                    }
                }
            },
        ),
    )
}

/// The license card, its live holders and Manage Seats: the part of the page that
/// refreshes on every seat event.
fn seats_section(
    session: &ConsoleSession,
    license: &License,
    ledger: &Ledger,
    currency: &str,
) -> Markup {
    let seats = &ledger.rows;
    let active: Vec<Seat> = seats
        .iter()
        .filter(|s| s.released_at.is_none())
        .cloned()
        .collect();
    let held: Vec<Seat> = active
        .iter()
        .filter(|s| s.kind != SeatKind::Assignment)
        .cloned()
        .collect();
    html! {
        (license_card(session, license, currency))
        h2 { "Seats in use" }
        p { span.figure #seats-figure { (license.seats_used) " / " (license.seats_total) } " "
            span.muted { (license.seats_total - license.seats_used) " free" } }
        h2 { "Live holders" }
        (holders_table(&held))
        @if license.seat_model == leasehold_core::SeatModel::Concurrent {
            h2 { "Wait queue" }
            p #queue-figure { (ledger.waiters.len()) " waiting" }
            @if !ledger.waiters.is_empty() {
                div.table-wrap { table #queue {
                    thead { tr { th { "#" } th { "Computer" } th { "User" } th { "Waiting since" } th { "Last asked" } } }
                    tbody {
                        @for w in &ledger.waiters {
                            tr { td { (w.position) } td { (w.identifier.as_deref().unwrap_or(&w.fingerprint)) }
                                 td { (w.os_user) } td { (when(Some(w.since))) } td { (when(Some(w.last_seen_at))) } }
                        }
                    }
                } }
            }
        }
        h2 { "Manage Seats" }
        div.table-wrap { table #ledger {
            thead { tr { th { "Assignee" } th { "Kind" } th { "Serial key" } th { "Activated" } th { "Last heartbeat" } th { "Released / reclaimed" } th { span.muted { "Action" } } } }
            tbody {
                @for seat in seats {
                    tr data-seat=(seat.id) data-active=(seat.released_at.is_none()) {
                        td { (holder(seat)) (terminated_badge(seat)) }
                        td { (seat.kind.as_str())
                            @if seat.kind == SeatKind::Borrow && seat.released_at.is_none() { " until " (when(seat.expires_at)) } }
                        td { (seat.serial_key_masked.as_deref().unwrap_or("—")) }
                        td { @if let Some(d) = seat.activated_on { (d) } @else { (when(Some(seat.created_at))) } }
                        td { (when(seat.last_seen_at)) }
                        td {
                            @if let Some(d) = seat.reclaimed_on { (d) } @else if seat.released_at.is_some() { (when(seat.released_at)) }
                            @if let Some(reason) = seat.release_reason { " (" (reason.as_str()) ")" }
                        }
                        td {
                            @if seat.released_at.is_none() && session.can(Permission::LicenseAssign) {
                                @if seat.kind == SeatKind::Borrow {
                                    form.inline method="post" action={"/seats/" (seat.id) "/reclaim"} data-confirm="This seat is borrowed for offline use: its license file stays valid until the borrow ends. Free the seat anyway?" {
                                        (csrf(session)) input type="hidden" name="force" value="true"; button type="submit" { "Force reclaim" }
                                    }
                                } @else {
                                    form.inline method="post" action={"/seats/" (seat.id) "/reclaim"} data-confirm="Reclaim this seat?" {
                                        (csrf(session)) button type="submit" { "Reclaim" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        } }
        (next_page(&format!("/licenses/{}", license.id), &[], ledger.next.as_deref()))
    }
}

async fn assign_seat(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted { session, form, .. }: Posted,
) -> Response {
    let text = |k: &str| {
        form.get(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let activated_on = match text("activated_on").map(|d| d.parse()) {
        Some(Ok(d)) => Some(d),
        Some(Err(_)) => {
            return license_page(
                &state,
                &session,
                &id,
                None,
                None,
                Some("Activated date: not a date".into()),
                StatusCode::BAD_REQUEST,
            )
            .await
        }
        None => None,
    };
    let body = AssignSeat {
        contact_id: text("contact_id"),
        assignee_name: text("assignee_name"),
        device_name: text("device_name"),
        seat_serial_key: text("seat_serial_key"),
        activated_on,
    };
    match service::assign_seat(&state, &session.principal, &id, body).await {
        Ok(_) => Redirect::to(&format!("/licenses/{id}")).into_response(),
        Err(error)
            if error.status == StatusCode::CONFLICT || error.status == StatusCode::BAD_REQUEST =>
        {
            let status = error.status;
            license_page(
                &state,
                &session,
                &id,
                None,
                None,
                Some(error.message),
                status,
            )
            .await
        }
        Err(error) => failed(&session, error),
    }
}

async fn reclaim_seat(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted { session, form, .. }: Posted,
) -> Response {
    let force = form.get("force").is_some_and(|v| v == "true");
    match service::reclaim_seat(&state, &session.principal, &id, force).await {
        Ok(seat) => Redirect::to(&format!("/licenses/{}", seat.license_id)).into_response(),
        Err(error) => failed(&session, error),
    }
}

// ---- contacts ----
