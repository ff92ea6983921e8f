//! Live usage: who holds which seat right now (the page updates itself).

use super::paging::whole;
use super::view::{self, page, when};
use super::ConsoleSession;
use crate::error::ApiError;
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use leasehold_store::{LicenseFilter, Seat};
use maud::{html, Markup};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(overview))
        .route("/live", get(overview_fragment))
}

async fn overview(State(state): State<AppState>, session: ConsoleSession) -> Response {
    let body = tri!(session, overview_body(&state, &session).await);
    page(
        "Live usage",
        Some(&session),
        html! {
            h1 { "Live usage" }
            p.muted { "Who holds which seat right now. This page updates itself." }
            section #live data-live-src="/live" data-live-stream="/v1/events/stream" aria-live="polite" { (body) }
        },
    )
}

async fn overview_fragment(State(state): State<AppState>, session: ConsoleSession) -> Response {
    let body = tri!(session, overview_body(&state, &session).await);
    view::respond(StatusCode::OK, body)
}

async fn overview_body(state: &AppState, session: &ConsoleSession) -> Result<Markup, ApiError> {
    let ws = &session.principal.workspace_id;
    let store = &state.store;
    let licenses = whole(|page| async move {
        store
            .list_licenses(ws, &LicenseFilter::default(), &page)
            .await
    })
    .await?;
    let mut rows = Vec::new();
    for license in licenses {
        let seats = live_seats(state, ws, &license.id).await?;
        let waiters = match license.seat_model {
            leasehold_core::SeatModel::Concurrent => store.waiters(ws, &license.id).await?,
            leasehold_core::SeatModel::Dedicated => Vec::new(),
        };
        rows.push((license, seats, waiters));
    }
    Ok(html! {
        @if rows.is_empty() { p { "No licenses yet. " a href="/applications" { "Add an application" } " to start." } }
        @for (license, seats, waiters) in &rows {
            article.card {
                h3 {
                    a href={"/licenses/" (license.id)} { (license.licensed_to) " · " (license.key_masked) }
                    span.figure data-seats-figure=(license.id) { (license.seats_used) " / " (license.seats_total) }
                }
                p.muted { (license.seat_model.as_str()) " · " (license.seats_total - license.seats_used) " free"
                    " · " a href={"/licenses/" (license.id) "#usage"} { "usage chart" }
                    @if !waiters.is_empty() { " · " span data-waiting=(license.id) { (waiters.len()) " waiting" } } }
                (holders_table(seats))
                @if !waiters.is_empty() {
                    p.muted { "In the queue: "
                        @for (n, w) in waiters.iter().enumerate() {
                            @if n > 0 { ", " }
                            (w.identifier.as_deref().unwrap_or(&w.fingerprint)) " (" (w.os_user) ", since " (when(Some(w.since))) ")"
                        }
                    }
                }
            }
        }
    })
}

/// A license's live seats, all of them (no more than its seats total).
pub(super) async fn live_seats(
    state: &AppState,
    ws: &str,
    license_id: &str,
) -> leasehold_store::Result<Vec<Seat>> {
    let store = &state.store;
    whole(|page| async move { store.list_seats(ws, license_id, true, &page).await }).await
}

pub(super) fn holders_table(seats: &[Seat]) -> Markup {
    html! {
        @if seats.is_empty() { p.muted { "No seat is held." } } @else {
            div.table-wrap { table {
                thead { tr { th { "Computer" } th { "User" } th { "Since" } th { "Last heartbeat" } } }
                tbody {
                    @for seat in seats {
                        tr data-holder=(seat.id) {
                            td { (seat.identifier.as_deref().or(seat.device_name.as_deref()).or(seat.assignee_name.as_deref()).or(seat.contact_name.as_deref()).unwrap_or("—")) }
                            td { (seat.os_user.as_deref().unwrap_or("—")) }
                            td { (when(Some(seat.created_at))) }
                            td { @if seat.kind == leasehold_core::SeatKind::Borrow {
                                span.badge data-borrowed-until=(seat.expires_at.unwrap_or(0)) { "borrowed until " (when(seat.expires_at)) }
                            } @else { (when(seat.last_seen_at)) } }
                        }
                    }
                }
            } }
        }
    }
}

// ---- applications ----
