//! Console: the workspace's members — add, change a role, disable or enable, remove
//! (owners only). Every form goes through the API's own functions and checks.

use super::failed;
use super::view::{csrf, page, when};
use super::{ConsoleSession, Posted};
use crate::error::ApiError;
use crate::service::members::{self, CreateMember, UpdateMember};
use crate::AppState;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use leasehold_core::{Permission, Role};
use maud::html;
use std::collections::HashMap;

type FormData = HashMap<String, String>;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/members", get(list).post(create))
        .route("/members/{id}", post(update))
        .route("/members/{id}/delete", post(remove))
}

/// Checks that the member administers the workspace (the form's CSRF token is checked
/// by [`Posted`]).
fn guard(session: &ConsoleSession) -> Result<(), Box<Response>> {
    session
        .principal
        .require(Permission::WorkspaceAdmin)
        .map_err(|e| Box::new(failed(session, e)))
}

fn role_field(form: &FormData) -> Result<Option<Role>, ApiError> {
    match form.get("role").map(String::as_str) {
        None | Some("") => Ok(None),
        Some(text) => Role::parse(text)
            .map(Some)
            .ok_or_else(|| ApiError::invalid("role", "is not a role")),
    }
}

async fn list(State(state): State<AppState>, session: ConsoleSession) -> Response {
    if let Err(e) = session.principal.require(Permission::WorkspaceAdmin) {
        return failed(&session, e);
    }
    let list = match state
        .store
        .list_members(&session.principal.workspace_id)
        .await
    {
        Ok(list) => list,
        Err(e) => return failed(&session, e.into()),
    };
    let me = session.principal.actor.id.as_deref();
    page(
        "Members",
        Some(&session),
        html! {
            h1 { "Members" }
            p.muted { "A disabled member keeps their place and can't sign in; disabling or removing someone ends their sessions at once." }
            div.table-wrap { table {
                thead { tr { th { "Email" } th { "Role" } th { "Status" } th { span.muted { "Action" } } } }
                tbody { @for m in &list {
                    tr data-member=(m.id) {
                        td { (m.email) @if Some(m.id.as_str()) == me { " " span.muted { "(you)" } } }
                        td {
                            form.inline method="post" action={"/members/" (m.id)} {
                                (csrf(&session))
                                select id={"role-" (m.id)} name="role" aria-label={"Role of " (m.email)} {
                                    @for role in Role::ALL { option value=(role.as_str()) selected[*role == m.role] { (role.as_str()) } }
                                }
                                " " button type="submit" { "Change role" }
                            }
                        }
                        td { @match m.disabled_at {
                            Some(at) => { span.badge.terminated { "Disabled" } " " span.muted { (when(Some(at))) } }
                            None => { "Active" }
                        } }
                        td {
                            @if m.disabled_at.is_some() {
                                form.inline method="post" action={"/members/" (m.id)} {
                                    (csrf(&session))
                                    input type="hidden" name="disabled" value="false";
                                    button type="submit" { "Enable" }
                                }
                            } @else {
                                form.inline method="post" action={"/members/" (m.id)} data-confirm={"Disable " (m.email) "? They are signed out at once."} {
                                    (csrf(&session))
                                    input type="hidden" name="disabled" value="true";
                                    button.danger type="submit" { "Disable" }
                                }
                            }
                            " "
                            form.inline method="post" action={"/members/" (m.id) "/delete"} data-confirm={"Remove " (m.email) " from the workspace? They are signed out at once; their audit events stay."} {
                                (csrf(&session)) button.danger type="submit" { "Remove" }
                            }
                        }
                    }
                } }
            } }
            h2 { "Add a member" }
            form method="post" action="/members" {
                (csrf(&session))
                label for="m-email" { "Email" } input #m-email name="email" type="email" required;
                label for="m-password" { "Password (at least 8 characters)" } input #m-password name="password" type="password" autocomplete="new-password" required;
                label for="m-role" { "Role" }
                select #m-role name="role" { @for role in Role::ALL { option value=(role.as_str()) selected[*role == Role::Viewer] { (role.as_str()) } } }
                p { button.primary type="submit" { "Add member" } }
            }
        },
    )
}

async fn create(State(state): State<AppState>, Posted { session, form, .. }: Posted) -> Response {
    if let Err(refused) = guard(&session) {
        return *refused;
    }
    let role = match role_field(&form) {
        Ok(role) => role.unwrap_or(Role::Viewer),
        Err(e) => return failed(&session, e),
    };
    let body = CreateMember {
        email: form.get("email").cloned().unwrap_or_default(),
        password: form.get("password").cloned().unwrap_or_default(),
        role,
    };
    back(
        &session,
        members::create(&state, &session.principal, body).await,
    )
}

/// Back to the list when a change was made; the reason on a page of its own when not.
fn back<T>(session: &ConsoleSession, done: Result<T, ApiError>) -> Response {
    match done {
        Ok(_) => Redirect::to("/members").into_response(),
        Err(e) => failed(session, e),
    }
}

async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted { session, form, .. }: Posted,
) -> Response {
    if let Err(refused) = guard(&session) {
        return *refused;
    }
    let role = match role_field(&form) {
        Ok(role) => role,
        Err(e) => return failed(&session, e),
    };
    let disabled = match form.get("disabled").map(String::as_str) {
        None | Some("") => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => {
            return failed(
                &session,
                ApiError::invalid("disabled", "is not true or false"),
            )
        }
    };
    let change = UpdateMember { role, disabled };
    back(
        &session,
        members::update(&state, &session.principal, &id, change).await,
    )
}

async fn remove(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted { session, .. }: Posted,
) -> Response {
    if let Err(refused) = guard(&session) {
        return *refused;
    }
    back(
        &session,
        members::remove(&state, &session.principal, &id).await,
    )
}
