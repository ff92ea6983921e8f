//! The customer self-service page: a license holder signs in with the license key and
//! sees only that key's seats; they may release their own dedicated seat to move it.

use super::view::{self, when};
use crate::error::ApiError;
use crate::extract::token_hash;
use crate::session::{cookie, random_token, set_cookie, PORTAL_COOKIE};
use crate::AppState;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use leasehold_core::keys;
use leasehold_core::SeatKind;
use leasehold_store::{License, Session};
use maud::html;
use std::collections::HashMap;
use std::net::SocketAddr;

const PORTAL_HOURS: i64 = 2;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/portal", get(portal).post(sign_in))
        .route("/portal/release/{seat_id}", post(release))
        .route("/portal/logout", post(sign_out))
}

/// The license and CSRF token of this browser's portal session.
async fn portal_session(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<(License, String)>, ApiError> {
    let Some(token) = cookie(headers, PORTAL_COOKIE) else {
        return Ok(None);
    };
    let Some(session) = state.store.session(&token_hash(&token)).await? else {
        return Ok(None);
    };
    let (Some(license_id), "portal") = (session.license_id.as_deref(), session.kind.as_str())
    else {
        return Ok(None);
    };
    match state.store.license(&session.workspace_id, license_id).await {
        Ok(license) => Ok(Some((license, session.csrf_token))),
        Err(leasehold_store::StoreError::NotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn portal(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match portal_session(&state, &headers).await {
        Ok(Some((license, csrf))) => seats_page(&state, &license, &csrf, None).await,
        Ok(None) => sign_in_page(&headers, None),
        Err(error) => error.into_response(),
    }
}

fn sign_in_page(headers: &HeaderMap, error: Option<&str>) -> Response {
    let csrf = random_token();
    let mut response = view::respond(
        if error.is_some() {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::OK
        },
        view::frame(
            "License portal",
            None,
            html! {
                h1 { "Your license" }
                p { "Sign in with your license key to see the computers that use it." }
                @if let Some(error) = error { p.error role="alert" { (error) } }
                form method="post" action="/portal" {
                    input type="hidden" name="_csrf" value=(csrf);
                    label for="portal-key" { "License key" }
                    input #portal-key name="key" autocomplete="off" required;
                    p { button.primary type="submit" { "Sign in" } }
                }
            },
        ),
    );
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(headers, "lh_portal_csrf", &csrf, 3600),
    );
    response
}

async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let expected = cookie(&headers, "lh_portal_csrf").unwrap_or_default();
    if expected.is_empty() || !super::form_carries_csrf(&form, &expected) {
        return sign_in_page(&headers, Some("The form expired; please try again."));
    }
    let ip = crate::limits::bucket_of(state.client_ip(peer.ip(), &headers)).to_string();
    if state
        .login_limits
        .check_key(&format!("portal:{ip}"))
        .is_err()
    {
        return view::error_page(
            None,
            StatusCode::TOO_MANY_REQUESTS,
            "Too many attempts; wait a minute.",
        );
    }
    let key = match keys::normalize_key(form.get("key").map(String::as_str).unwrap_or("")) {
        Ok(key) => key,
        Err(_) => return sign_in_page(&headers, Some("Enter your license key.")),
    };
    let license = match state
        .store
        .license_by_key_hash(&state.master.key_hash(&key))
        .await
    {
        Ok(Some(license)) => license,
        Ok(None) => return sign_in_page(&headers, Some("No license has this key.")),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let token = random_token();
    let now = chrono::Utc::now().timestamp_millis();
    let session = Session {
        token_hash: token_hash(&token),
        kind: "portal".into(),
        workspace_id: license.workspace_id.clone(),
        member_id: None,
        license_id: Some(license.id.clone()),
        csrf_token: random_token(),
        created_at: now,
        expires_at: now + PORTAL_HOURS * 3600 * 1000,
    };
    if let Err(e) = state.store.create_session(session).await {
        return ApiError::from(e).into_response();
    }
    let mut response = Redirect::to("/portal").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&headers, PORTAL_COOKIE, &token, PORTAL_HOURS * 3600),
    );
    response
}

async fn seats_page(
    state: &AppState,
    license: &License,
    csrf: &str,
    message: Option<String>,
) -> Response {
    let seats = match state
        .store
        .list_seats(
            &license.workspace_id,
            &license.id,
            true,
            &leasehold_store::PageRequest::first(200),
        )
        .await
    {
        Ok(page) => page.items,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let seats: Vec<_> = seats
        .into_iter()
        .filter(|s| s.kind != SeatKind::Assignment)
        .collect();
    view::page(
        "License portal",
        None,
        html! {
            h1 { "License " (license.key_masked) }
            p { "Licensed to " (license.licensed_to) " · " span #portal-figure { (license.seats_used) " / " (license.seats_total) } " seats in use" }
            @if let Some(message) = &message { p.notice role="status" { (message) } }
            div.table-wrap { table #portal-seats {
                thead { tr { th { "Computer" } th { "User" } th { "Since" } th { "Last seen" } th { span.muted { "Action" } } } }
                tbody { @for seat in &seats {
                    tr {
                        td { (seat.identifier.as_deref().unwrap_or("—")) }
                        td { (seat.os_user.as_deref().unwrap_or("—")) }
                        td { (when(Some(seat.created_at))) }
                        td { (when(seat.last_seen_at)) }
                        td { @if seat.kind == SeatKind::Activation {
                            form.inline method="post" action={"/portal/release/" (seat.id)}
                                data-confirm="Release this computer's seat, to use the license on another computer?" {
                                input type="hidden" name="_csrf" value=(csrf);
                                button type="submit" { "Release to move" }
                            }
                        } }
                    }
                } }
            } }
            p.muted { "Releases allowed per month: " (license.self_service_releases_per_month) "." }
            form method="post" action="/portal/logout" { input type="hidden" name="_csrf" value=(csrf); button type="submit" { "Sign out" } }
        },
    )
}

async fn release(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(seat_id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let (license, csrf) = match portal_session(&state, &headers).await {
        Ok(Some((license, csrf))) => (std::sync::Arc::new(license), csrf),
        Ok(None) => return Redirect::to("/portal").into_response(),
        Err(error) => return error.into_response(),
    };
    if let Some(refused) = csrf_refused(&form, &csrf) {
        return refused;
    }
    let seats = match state
        .store
        .list_seats(
            &license.workspace_id,
            &license.id,
            true,
            &leasehold_store::PageRequest::first(200),
        )
        .await
    {
        Ok(page) => page.items,
        Err(e) => return ApiError::from(e).into_response(),
    };
    // Only this key's own dedicated seats can be released here.
    let Some(fingerprint) = seats
        .iter()
        .find(|s| s.id == seat_id && s.kind == SeatKind::Activation)
        .and_then(|s| s.fingerprint.clone())
    else {
        return seats_page(
            &state,
            &license,
            &csrf,
            Some("That seat is not one of this key's computers.".into()),
        )
        .await;
    };
    let message = match state.store.deactivate(&license, &fingerprint).await {
        Ok(_) => {
            state
                .live
                .publish(&license.workspace_id, &license.id, "seat.released");
            "The seat is free: activate the license on the new computer.".to_string()
        }
        Err(error) => ApiError::from(error).message,
    };
    let license = state
        .store
        .license(&license.workspace_id, &license.id)
        .await
        .unwrap_or_else(|_| license.as_ref().clone());
    seats_page(&state, &license, &csrf, Some(message)).await
}

/// A 403 page unless the form carries the session's CSRF token.
fn csrf_refused(form: &HashMap<String, String>, csrf: &str) -> Option<Response> {
    (!super::form_carries_csrf(form, csrf)).then(|| {
        view::error_page(
            None,
            StatusCode::FORBIDDEN,
            "The form expired; reload the page.",
        )
    })
}

async fn sign_out(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    // Only the page's own form ends a session (another site cannot sign a customer out);
    // without a session there is nothing to end but the cookie.
    match portal_session(&state, &headers).await {
        Ok(Some((_, csrf))) => {
            if let Some(refused) = csrf_refused(&form, &csrf) {
                return refused;
            }
        }
        Ok(None) => {}
        Err(error) => return error.into_response(),
    }
    if let Some(token) = cookie(&headers, PORTAL_COOKIE) {
        let _ = state.store.delete_session(&token_hash(&token)).await;
    }
    let mut response = Redirect::to("/portal").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(&headers, PORTAL_COOKIE, "", 0),
    );
    response
}
