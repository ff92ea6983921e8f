//! Console pages: live usage, applications and their license cards, a license with Manage
//! Seats, contacts, reminders and the audit log.

use super::view::{self, csrf, day, holder, money, page, status_badge, terminated_badge, when};
use super::{ConsoleSession, Posted};
use crate::error::ApiError;
use crate::service::tracking as service;
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use leasehold_core::{DeploymentModel, Permission, SeatKind};
use leasehold_proto::{AssignSeat, CreateLicense, UpdateLicense};
use leasehold_store::{
    Application, EventFilter, License, LicenseFilter, Page, PageRequest, ReminderFilter, Seat,
};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::HashMap;

type FormData = HashMap<String, String>;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(overview))
        .route("/live", get(overview_fragment))
        .route("/applications", get(applications).post(create_application))
        .route("/applications/{id}", get(application))
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
        .route("/contacts", get(contacts).post(create_contact))
        .route("/contacts/{id}/terminate", post(terminate_contact))
        .route("/reminders", get(reminders))
        .route("/reminders/{id}/dismiss", post(dismiss_reminder))
        .route("/audit", get(audit))
}

/// An API error as a console page.
pub(super) fn failed(session: &ConsoleSession, error: ApiError) -> Response {
    view::error_page(Some(session), error.status, &error.message)
}

macro_rules! tri {
    ($session:expr, $e:expr) => {
        match $e {
            Ok(value) => value,
            Err(error) => return failed(&$session, ApiError::from(error)),
        }
    };
}

/// Every row of a listing, a page at a time, for the sets the console shows whole (a
/// workspace's licenses and applications, a license's live seats, the contacts to pick
/// from), which the business bounds. Logs (the audit log, a license's released seats,
/// the contacts list) are paged instead: [`log_page`].
pub(super) async fn whole<T, F, Fut>(mut fetch: F) -> leasehold_store::Result<Vec<T>>
where
    F: FnMut(PageRequest) -> Fut,
    Fut: std::future::Future<Output = leasehold_store::Result<Page<T>>>,
{
    let mut items = Vec::new();
    let mut request = PageRequest::first(PageRequest::MAX_LIMIT);
    loop {
        let page = fetch(request.clone()).await?;
        items.extend(page.items);
        match page.next_cursor {
            Some(next) => request.cursor = Some(next),
            None => return Ok(items),
        }
    }
}

/// Rows per page of a log in the console.
const LOG_PAGE: u32 = 100;

/// `?cursor=` of a paged console list.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Cursor {
    pub(super) cursor: Option<String>,
}

/// The page of a log that starts at `cursor` (the first without one).
pub(super) fn log_page(cursor: Option<&str>) -> PageRequest {
    PageRequest {
        cursor: cursor.filter(|c| !c.is_empty()).map(String::from),
        limit: LOG_PAGE,
    }
}

/// The link to a log's next page, if there is one: `path` with `query` and the cursor.
pub(super) fn next_page(path: &str, query: &[(&str, &str)], next: Option<&str>) -> Markup {
    let Some(next) = next else {
        return html! {};
    };
    let mut params: Vec<(&str, &str)> = query
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .copied()
        .collect();
    params.push(("cursor", next));
    let href = format!(
        "{path}?{}",
        serde_urlencoded::to_string(&params).unwrap_or_default()
    );
    html! { p.next-page { a rel="next" href=(href) { "Older →" } } }
}

// ---- live usage ----

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
        rows.push((license, seats));
    }
    Ok(html! {
        @if rows.is_empty() { p { "No licenses yet. " a href="/applications" { "Add an application" } " to start." } }
        @for (license, seats) in &rows {
            article.card {
                h3 {
                    a href={"/licenses/" (license.id)} { (license.licensed_to) " · " (license.key_masked) }
                    span.figure data-seats-figure=(license.id) { (license.seats_used) " / " (license.seats_total) }
                }
                p.muted { (license.seat_model.as_str()) " · " (license.seats_total - license.seats_used) " free" }
                (holders_table(seats))
            }
        }
    })
}

/// A license's live seats, all of them (no more than its seats total).
async fn live_seats(
    state: &AppState,
    ws: &str,
    license_id: &str,
) -> leasehold_store::Result<Vec<Seat>> {
    let store = &state.store;
    whole(|page| async move { store.list_seats(ws, license_id, true, &page).await }).await
}

/// A workspace's applications, all of them.
async fn all_applications(state: &AppState, ws: &str) -> leasehold_store::Result<Vec<Application>> {
    let store = &state.store;
    whole(|page| async move { store.list_applications(ws, &page).await }).await
}

fn holders_table(seats: &[Seat]) -> Markup {
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
                            td { (when(seat.last_seen_at)) }
                        }
                    }
                }
            } }
        }
    }
}

// ---- applications ----

async fn applications(State(state): State<AppState>, session: ConsoleSession) -> Response {
    let apps = tri!(
        session,
        all_applications(&state, &session.principal.workspace_id).await
    );
    page(
        "Applications",
        Some(&session),
        html! {
            h1 { "Applications" }
            div.table-wrap { table {
                thead { tr { th { "Name" } th { "Vendor" } th { "Deployment" } } }
                tbody { @for app in &apps {
                    tr { td { a href={"/applications/" (app.id)} { (app.name) } } td { (app.vendor.as_deref().unwrap_or("—")) } td { (deployment(app.deployment_model)) } }
                } }
            } }
            @if session.can(Permission::LicenseManage) {
                h2 { "Add an application" }
                form method="post" action="/applications" {
                    (csrf(&session))
                    label for="app-name" { "Name" } input #app-name name="name" required;
                    label for="app-vendor" { "Vendor" } input #app-vendor name="vendor";
                    label for="app-model" { "Deployment model" }
                    select #app-model name="deployment_model" {
                        option value="on_premise" { "On premise" } option value="cloud" { "Cloud" } option value="hybrid" { "Hybrid" }
                    }
                    p { button.primary type="submit" { "Add application" } }
                }
            }
        },
    )
}

fn deployment(model: DeploymentModel) -> &'static str {
    match model {
        DeploymentModel::Cloud => "Cloud",
        DeploymentModel::OnPremise => "On premise",
        DeploymentModel::Hybrid => "Hybrid",
    }
}

async fn create_application(
    State(state): State<AppState>,
    Posted { session, form, .. }: Posted,
) -> Response {
    if let Err(e) = session.principal.require(Permission::LicenseManage) {
        return failed(&session, e);
    }
    let model = form
        .get("deployment_model")
        .and_then(|m| DeploymentModel::parse(m))
        .unwrap_or(DeploymentModel::OnPremise);
    let name = form.get("name").map(String::as_str).unwrap_or_default();
    let vendor = form.get("vendor").map(String::as_str);
    let application = match service::new_application(name, vendor, model) {
        Ok(application) => application,
        Err(e) => return failed(&session, e),
    };
    let created = tri!(
        session,
        state
            .store
            .create_application(
                &session.principal.actor,
                &session.principal.workspace_id,
                application,
            )
            .await
    );
    Redirect::to(&format!("/applications/{}", created.id)).into_response()
}

async fn application(
    State(state): State<AppState>,
    session: ConsoleSession,
    Path(id): Path<String>,
) -> Response {
    let ws = &session.principal.workspace_id;
    let app = tri!(session, state.store.application(ws, &id).await);
    let filter = LicenseFilter {
        application_id: Some(id.clone()),
        status: None,
    };
    let store = &state.store;
    let filter = &filter;
    let licenses = tri!(
        session,
        whole(|page| async move { store.list_licenses(ws, filter, &page).await }).await
    );
    let currency = tri!(session, state.store.workspace(ws).await).currency;
    page(
        &app.name,
        Some(&session),
        html! {
            h1 { (app.name) }
            p.muted { (app.vendor.as_deref().unwrap_or("")) " · " (deployment(app.deployment_model)) }
            nav aria-label="Application" { strong { "Licenses" } }
            @if session.can(Permission::LicenseManage) {
                p { a.button href={"/licenses/new?application_id=" (app.id)} { "Add license" } }
            }
            @if licenses.is_empty() { p { "No licenses yet." } }
            div.cards { @for license in &licenses { (license_card(&session, license, &currency)) } }
        },
    )
}

fn license_card(session: &ConsoleSession, l: &License, currency: &str) -> Markup {
    let cost_currency = l.cost_currency.as_deref().or(Some(currency));
    html! {
        article.card data-license=(l.id) {
            h3 {
                a href={"/licenses/" (l.id)} { (l.licensed_to) }
                (status_badge(l))
            }
            dl {
                dt { "Key" } dd { code { (l.key_masked) } }
                dt { "Type" } dd { (l.license_type.as_str()) " · " (l.seat_model.as_str()) }
                dt { "Seats" } dd { span data-seats-figure=(l.id) { (l.seats_used) " / " (l.seats_total) } }
                dt { "Version" } dd { (l.version.as_deref().unwrap_or("—")) }
                dt { "Purchased" } dd { (day(l.purchased_on)) }
                dt { "PO number" } dd { (l.po_number.as_deref().unwrap_or("—")) }
                dt { "Cost" } dd { (money(l.cost_amount_minor, cost_currency)) }
                dt { "Expires" } dd { (day(l.expires_on)) }
                dt { "Maintenance expires" } dd { (day(l.maintenance_expires_on)) }
            }
            @if session.can(Permission::LicenseManage) {
                div.actions {
                    a.button href={"/licenses/" (l.id) "/edit"} aria-label={"Edit " (l.licensed_to)} title="Edit" { "✎ Edit" }
                    form.inline method="post" action={"/licenses/" (l.id) "/delete"} data-confirm="Delete this license? Its seats are released." {
                        (csrf(session))
                        button.danger type="submit" aria-label={"Delete " (l.licensed_to)} title="Delete" { "✕ Delete" }
                    }
                    form.inline method="post" action={"/licenses/" (l.id) "/reveal"} {
                        (csrf(session)) button type="submit" { "Reveal key" }
                    }
                }
            }
        }
    }
}

// ---- license form ----

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

fn license_values(l: &License) -> FormData {
    let mut v = FormData::new();
    let mut put = |k: &str, val: Option<String>| {
        v.insert(k.to_string(), val.unwrap_or_default());
    };
    put("licensed_to", Some(l.licensed_to.clone()));
    put("vendor", l.vendor.clone());
    put("type", Some(l.license_type.as_str().into()));
    put("status", Some(l.status.as_str().into()));
    put("seat_model", Some(l.seat_model.as_str().into()));
    put("seats_total", Some(l.seats_total.to_string()));
    put("version", l.version.clone());
    put(
        "cost",
        l.cost_amount_minor
            .map(|a| format!("{}.{:02}", a / 100, a % 100)),
    );
    put("purchased_on", l.purchased_on.map(|d| d.to_string()));
    put("expires_on", l.expires_on.map(|d| d.to_string()));
    put(
        "maintenance_expires_on",
        l.maintenance_expires_on.map(|d| d.to_string()),
    );
    put("po_number", l.po_number.clone());
    put("notes", l.notes.clone());
    put("lease_ttl_s", Some(l.lease_ttl_s.to_string()));
    v
}

/// The license form; `editing` is the license being edited, `error` the field and message.
fn license_form_page(
    session: &ConsoleSession,
    apps: &[Application],
    editing: Option<&License>,
    values: &FormData,
    error: Option<(String, String)>,
    status: StatusCode,
) -> Response {
    let value = |k: &str| values.get(k).cloned().unwrap_or_default();
    let err = |k: &str| -> Markup {
        html! { @if let Some((field, message)) = &error { @if field == k || field.starts_with(&format!("{k}.")) { span.error id={"err-" (k)} role="alert" { " " (message) } } } }
    };
    let selected = |k: &str, v: &str| value(k) == v;
    let action = match editing {
        Some(l) => format!("/licenses/{}/edit", l.id),
        None => "/licenses".to_string(),
    };
    let title = if editing.is_some() {
        "Edit license"
    } else {
        "Add license"
    };
    view::respond(
        status,
        view::frame(
            title,
            Some(session),
            html! {
                h1 { (title) }
                @if let Some((field, message)) = &error { p.error role="alert" { "Please correct " (field) ": " (message) } }
                form method="post" action=(action) novalidate {
                    (csrf(session))
                    div.grid2 {
                        @if editing.is_none() {
                            div {
                                label for="f-app" { "Application" }
                                select #f-app name="application_id" {
                                    @for app in apps { option value=(app.id) selected[selected("application_id", &app.id)] { (app.name) } }
                                }
                                (err("application_id"))
                            }
                            div { label for="f-key" { "Product key (blank: generate one)" } input #f-key name="key" value=(value("key")) autocomplete="off"; (err("key")) }
                        }
                        div { label for="f-to" { "Licensed to" } input #f-to name="licensed_to" value=(value("licensed_to")) required; (err("licensed_to")) }
                        div { label for="f-vendor" { "Vendor" } input #f-vendor name="vendor" value=(value("vendor")); (err("vendor")) }
                        div { label for="f-type" { "Type" }
                            select #f-type name="type" { @for t in ["perpetual", "subscription", "trial"] { option value=(t) selected[selected("type", t)] { (t) } } } (err("type")) }
                        div { label for="f-status" { "Status" }
                            select #f-status name="status" { @for t in ["active", "suspended", "revoked"] { option value=(t) selected[selected("status", t)] { (t) } } } (err("status")) }
                        div { label for="f-model" { "Seat model" }
                            select #f-model name="seat_model" { @for t in ["dedicated", "concurrent"] { option value=(t) selected[selected("seat_model", t)] { (t) } } } (err("seat_model")) }
                        div { label for="f-seats" { "Seats total" } input #f-seats name="seats_total" inputmode="numeric" value=(value("seats_total")) required; (err("seats_total")) }
                        div { label for="f-version" { "Version" } input #f-version name="version" value=(value("version")); (err("version")) }
                        div { label for="f-cost" { "Cost (in the workspace currency, e.g. 1299.00)" } input #f-cost name="cost" inputmode="decimal" value=(value("cost")); (err("cost")) }
                        div { label for="f-bought" { "Purchase date" } input #f-bought name="purchased_on" type="date" value=(value("purchased_on")); (err("purchased_on")) }
                        div { label for="f-expires" { "Expiry date" } input #f-expires name="expires_on" type="date" value=(value("expires_on")); (err("expires_on")) }
                        div { label for="f-maint" { "Maintenance expiry date" } input #f-maint name="maintenance_expires_on" type="date" value=(value("maintenance_expires_on")); (err("maintenance_expires_on")) }
                        div { label for="f-po" { "PO number" } input #f-po name="po_number" value=(value("po_number")); (err("po_number")) }
                        div { label for="f-ttl" { "Lease TTL (seconds)" } input #f-ttl name="lease_ttl_s" inputmode="numeric" value=(value("lease_ttl_s")); (err("policy")) }
                    }
                    label for="f-notes" { "Notes" } textarea #f-notes name="notes" rows="3" { (value("notes")) } (err("notes"))
                    p { button.primary type="submit" { "Save license" } }
                }
            },
        ),
    )
}

/// Turns the form into the API's JSON shape, so the API's validation (and its field
/// names) apply; `for_update` sends blanks as nulls, to clear.
fn license_json(
    form: &FormData,
    currency: &str,
    for_update: bool,
) -> Result<Map<String, Value>, (String, String)> {
    let mut body = Map::new();
    let text = |k: &str| {
        form.get(k)
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    for key in [
        "key",
        "licensed_to",
        "vendor",
        "type",
        "status",
        "seat_model",
        "version",
        "purchased_on",
        "expires_on",
        "maintenance_expires_on",
        "po_number",
        "notes",
        "application_id",
    ] {
        if for_update && (key == "key" || key == "application_id") {
            continue;
        }
        let value = text(key);
        if !value.is_empty() {
            body.insert(key.into(), json!(value));
        } else if for_update && !matches!(key, "licensed_to" | "type" | "status" | "seat_model") {
            body.insert(key.into(), Value::Null);
        }
    }
    let seats = text("seats_total");
    if !seats.is_empty() || !for_update {
        let seats: i64 = seats.parse().map_err(|_| {
            (
                "seats_total".to_string(),
                "must be a whole number".to_string(),
            )
        })?;
        body.insert("seats_total".into(), json!(seats));
    }
    let cost = text("cost");
    if cost.is_empty() {
        if for_update {
            body.insert("cost".into(), Value::Null);
        }
    } else {
        let minor = parse_money(&cost).ok_or((
            "cost".to_string(),
            "must be an amount such as 1299.00".to_string(),
        ))?;
        body.insert(
            "cost".into(),
            json!({"amount_minor": minor, "currency": currency}),
        );
    }
    let ttl = text("lease_ttl_s");
    if !ttl.is_empty() {
        let ttl: i64 = ttl.parse().map_err(|_| {
            (
                "policy.lease_ttl_s".to_string(),
                "must be a whole number of seconds".to_string(),
            )
        })?;
        body.insert("policy".into(), json!({"lease_ttl_s": ttl}));
    }
    Ok(body)
}

/// "1299.5" → 129950 minor units (two decimals). Digits only: a cost is never negative,
/// and "-0.50" must not come out as 50.
fn parse_money(text: &str) -> Option<i64> {
    let text = text.replace(',', "");
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if fraction.len() > 2
        || whole.is_empty() && fraction.is_empty()
        || !digits(whole)
        || !digits(fraction)
    {
        return None;
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let fraction: i64 = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<2}").parse().ok()?
    };
    whole.checked_mul(100)?.checked_add(fraction)
}

fn field_of(error: &ApiError) -> String {
    error
        .details
        .as_ref()
        .and_then(|d| d.get("field"))
        .and_then(|f| f.as_str())
        .unwrap_or("form")
        .to_string()
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
    let body = match license_json(&form, &currency, false) {
        Ok(body) => body,
        Err(error) => return invalid(error),
    };
    let body: CreateLicense =
        match crate::extract::parse_json(Value::Object(body).to_string().as_bytes()) {
            Ok(body) => body,
            Err(error) => return invalid((field_of(&error), error.message)),
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
        Err(error)
            if error.status == StatusCode::BAD_REQUEST || error.status == StatusCode::CONFLICT =>
        {
            invalid((field_of(&error), error.message))
        }
        Err(error) => failed(&session, error),
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
    let body = match license_json(&form, &currency, true) {
        Ok(body) => body,
        Err(error) => return invalid(error),
    };
    let body: UpdateLicense =
        match crate::extract::parse_json(Value::Object(body).to_string().as_bytes()) {
            Ok(body) => body,
            Err(error) => return invalid((field_of(&error), error.message)),
        };
    match service::update_license(&state, &session.principal, &id, body).await {
        Ok(_) => Redirect::to(&format!("/licenses/{id}")).into_response(),
        Err(error)
            if error.status == StatusCode::BAD_REQUEST || error.status == StatusCode::CONFLICT =>
        {
            invalid((field_of(&error), error.message))
        }
        Err(error) => failed(&session, error),
    }
}

async fn delete_license(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted {
        session, form: _, ..
    }: Posted,
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
    Posted {
        session, form: _, ..
    }: Posted,
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
        h2 { "Manage Seats" }
        div.table-wrap { table #ledger {
            thead { tr { th { "Assignee" } th { "Kind" } th { "Serial key" } th { "Activated" } th { "Last heartbeat" } th { "Released / reclaimed" } th { span.muted { "Action" } } } }
            tbody {
                @for seat in seats {
                    tr data-seat=(seat.id) data-active=(seat.released_at.is_none()) {
                        td { (holder(seat)) (terminated_badge(seat)) }
                        td { (seat.kind.as_str()) }
                        td { (seat.serial_key_masked.as_deref().unwrap_or("—")) }
                        td { @if let Some(d) = seat.activated_on { (d) } @else { (when(Some(seat.created_at))) } }
                        td { (when(seat.last_seen_at)) }
                        td {
                            @if let Some(d) = seat.reclaimed_on { (d) } @else if seat.released_at.is_some() { (when(seat.released_at)) }
                            @if let Some(reason) = seat.release_reason { " (" (reason.as_str()) ")" }
                        }
                        td {
                            @if seat.released_at.is_none() && session.can(Permission::LicenseAssign) {
                                form.inline method="post" action={"/seats/" (seat.id) "/reclaim"} data-confirm="Reclaim this seat?" {
                                    (csrf(session)) button type="submit" { "Reclaim" }
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
    Posted {
        session, form: _, ..
    }: Posted,
) -> Response {
    match service::reclaim_seat(&state, &session.principal, &id).await {
        Ok(seat) => Redirect::to(&format!("/licenses/{}", seat.license_id)).into_response(),
        Err(error) => failed(&session, error),
    }
}

// ---- contacts ----

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
    Posted {
        session, form: _, ..
    }: Posted,
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
    Posted {
        session, form: _, ..
    }: Posted,
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

#[cfg(test)]
mod tests {
    use super::parse_money;

    #[test]
    fn money_is_read_into_minor_units() {
        assert_eq!(parse_money("1299.5"), Some(129950));
        assert_eq!(parse_money("1,299.05"), Some(129905));
        assert_eq!(parse_money("12"), Some(1200));
        assert_eq!(parse_money("1.234"), None);
        assert_eq!(parse_money("abc"), None);
        assert_eq!(parse_money(".5"), Some(50));
        // Signs anywhere are refused, not folded into a positive amount.
        assert_eq!(parse_money("-0.50"), None);
        assert_eq!(parse_money("-1.50"), None);
        assert_eq!(parse_money("+12"), None);
        assert_eq!(parse_money("1.-5"), None);
    }
}
