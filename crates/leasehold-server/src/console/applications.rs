//! Applications and their license cards.

use super::paging::whole;
use super::view::{csrf, day, money, page, status_badge};
use super::{failed, ConsoleSession, Posted};
use crate::service::tracking as service;
use crate::AppState;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use leasehold_core::{DeploymentModel, Permission};
use leasehold_store::{Application, License, LicenseFilter};
use maud::{html, Markup};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/applications", get(applications).post(create_application))
        .route("/applications/{id}", get(application))
}

async fn applications(State(state): State<AppState>, session: ConsoleSession) -> Response {
    let apps = tri!(
        session,
        all_applications(&state, &session.principal.workspace_id).await
    );
    let key = tri!(
        session,
        state
            .signers
            .workspace(state.store.as_ref(), &session.principal.workspace_id)
            .await
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
            h2 { "Signing key" }
            p { "Your applications check Leasehold's answers and offline license files with this workspace's Ed25519 public key." }
            dl #signing-key {
                dt { "Public key (base64)" } dd { code data-key="base64" { (key.public_key_base64()) } }
                dt { "Public key (hex), for Keygen clients" } dd { code data-key="hex" { (key.public_key_hex()) } }
            }
            p.hint { "Applications written for Keygen: set their API URL to this server's address followed by " code { "/keygen" } " and their public key to the hex form." }
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

pub(super) fn license_card(session: &ConsoleSession, l: &License, currency: &str) -> Markup {
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

/// A workspace's applications, all of them.
pub(super) async fn all_applications(
    state: &AppState,
    ws: &str,
) -> leasehold_store::Result<Vec<Application>> {
    let store = &state.store;
    whole(|page| async move { store.list_applications(ws, &page).await }).await
}
