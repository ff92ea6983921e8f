use crate::convert;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiQuery, Paging, Principal};
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use leasehold_core::Permission;
use leasehold_proto::{Contact, CreateContact, ErrorBody, Page};

/// Records a person seats can be assigned to.
#[utoipa::path(post, path = "/v1/contacts", tag = "contacts", request_body = CreateContact,
    security(("bearer" = [])),
    responses((status = 201, body = Contact), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn create_contact(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateContact>,
) -> ApiResult<(StatusCode, Json<Contact>)> {
    principal.require(Permission::LicenseAssign)?;
    let contact = crate::service::tracking::new_contact(&body.name, body.email.as_deref())?;
    let created = state
        .store
        .create_contact(&principal.actor, &principal.workspace_id, contact)
        .await?;
    Ok((StatusCode::CREATED, Json(convert::contact(created, None))))
}

#[utoipa::path(get, path = "/v1/contacts", tag = "contacts", params(Paging), security(("bearer" = [])),
    responses((status = 200, body = Page<Contact>), (status = 401, body = ErrorBody)))]
pub async fn list_contacts(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(paging): ApiQuery<Paging>,
) -> ApiResult<Json<Page<Contact>>> {
    principal.require(Permission::LicenseView)?;
    let page = state
        .store
        .list_contacts(&principal.workspace_id, &paging.request()?)
        .await?;
    Ok(Json(convert::page(page, |c| convert::contact(c, None))))
}

/// A contact with the seats they hold now.
#[utoipa::path(get, path = "/v1/contacts/{id}", tag = "contacts", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Contact), (status = 404, body = ErrorBody)))]
pub async fn get_contact(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Contact>> {
    principal.require(Permission::LicenseView)?;
    let contact = state.store.contact(&principal.workspace_id, &id).await?;
    let seats = state
        .store
        .contact_seats(&principal.workspace_id, &id)
        .await?;
    Ok(Json(convert::contact(contact, Some(seats))))
}

/// Offboards a contact: their seats stay held, flagged `contact_terminated` for reclaim.
#[utoipa::path(post, path = "/v1/contacts/{id}/terminate", tag = "contacts", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Contact), (status = 404, body = ErrorBody)))]
pub async fn terminate_contact(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Contact>> {
    principal.require(Permission::LicenseManage)?;
    let contact = state
        .store
        .terminate_contact(&principal.actor, &principal.workspace_id, &id)
        .await?;
    let seats = state
        .store
        .contact_seats(&principal.workspace_id, &id)
        .await?;
    for seat in &seats {
        state.live.publish(
            &principal.workspace_id,
            &seat.license_id,
            "contact.terminated",
        );
    }
    Ok(Json(convert::contact(contact, Some(seats))))
}
