use crate::error::ApiResult;
use crate::extract::{ApiJson, Principal};
use crate::service::members::{self as service, CreateMember, MemberOut, UpdateMember};
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use leasehold_core::Permission;
use leasehold_proto::ErrorBody;

/// Adds a console member to the workspace.
#[utoipa::path(post, path = "/v1/members", tag = "workspace", request_body = CreateMember,
    security(("bearer" = [])),
    responses((status = 201, body = MemberOut), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn create_member(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateMember>,
) -> ApiResult<(StatusCode, Json<MemberOut>)> {
    let member = service::create(&state, &principal, body).await?;
    Ok((StatusCode::CREATED, Json(member)))
}

/// The workspace's members.
#[utoipa::path(get, path = "/v1/members", tag = "workspace", security(("bearer" = [])),
    responses((status = 200, body = Vec<MemberOut>), (status = 403, body = ErrorBody)))]
pub async fn list_members(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<Json<Vec<MemberOut>>> {
    principal.require(Permission::WorkspaceAdmin)?;
    let members = state.store.list_members(&principal.workspace_id).await?;
    Ok(Json(members.into_iter().map(MemberOut::from).collect()))
}

/// Changes a member's role, or disables or enables them. A disabled member's sessions end
/// at once (an open event stream within 5 s). The last owner who can sign in can't be
/// demoted or disabled (409 `LAST_OWNER`).
#[utoipa::path(patch, path = "/v1/members/{id}", tag = "workspace", request_body = UpdateMember,
    security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = MemberOut), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn update_member(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateMember>,
) -> ApiResult<Json<MemberOut>> {
    Ok(Json(service::update(&state, &principal, &id, body).await?))
}

/// Removes a member: their sessions end at once, their audit events stay. The last owner
/// who can sign in can't be removed (409 `LAST_OWNER`).
#[utoipa::path(delete, path = "/v1/members/{id}", tag = "workspace", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn delete_member(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    service::remove(&state, &principal, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
