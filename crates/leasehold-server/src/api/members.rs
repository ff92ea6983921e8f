use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, Principal};
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use leasehold_core::{Permission, Role};
use leasehold_proto::ErrorBody;
use leasehold_store::{Member, MemberChange, NewMember};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMember {
    pub email: String,
    /// At least 8 characters; stored as an argon2id hash.
    pub password: String,
    pub role: Role,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MemberOut {
    pub id: String,
    pub email: String,
    pub role: Role,
    /// A disabled member can't sign in; their sessions ended when they were disabled.
    pub disabled: bool,
    pub disabled_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl From<Member> for MemberOut {
    fn from(member: Member) -> MemberOut {
        MemberOut {
            id: member.id,
            email: member.email,
            role: member.role,
            disabled: member.disabled_at.is_some(),
            disabled_at: member.disabled_at.map(crate::convert::time),
        }
    }
}

/// A change to a member: a new role, or disabled (`true`) or enabled again (`false`).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMember {
    pub role: Option<Role>,
    pub disabled: Option<bool>,
}

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
    let member = create(&state, &principal, body).await?;
    Ok((StatusCode::CREATED, Json(member)))
}

/// Adds a member, as `POST /v1/members` and the console's Members page do.
pub(crate) async fn create(
    state: &AppState,
    principal: &Principal,
    body: CreateMember,
) -> ApiResult<MemberOut> {
    principal.require(Permission::WorkspaceAdmin)?;
    let email = body.email.trim().to_lowercase();
    if !email.contains('@') || email.chars().count() > 254 || email.chars().any(char::is_control) {
        return Err(ApiError::invalid("email", "is not an email address"));
    }
    if body.password.chars().count() < 8 {
        return Err(ApiError::invalid(
            "password",
            "must be at least 8 characters",
        ));
    }
    let password_hash = crate::setup::hash_password(body.password)
        .await
        .map_err(|_| ApiError::internal())?;
    let member = state
        .store
        .create_member(
            &principal.actor,
            &principal.workspace_id,
            NewMember {
                email,
                password_hash,
                role: body.role,
            },
        )
        .await?;
    Ok(member.into())
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
    Ok(Json(update(&state, &principal, &id, body).await?))
}

pub(crate) async fn update(
    state: &AppState,
    principal: &Principal,
    id: &str,
    body: UpdateMember,
) -> ApiResult<MemberOut> {
    principal.require(Permission::WorkspaceAdmin)?;
    let change = MemberChange {
        role: body.role,
        disabled: body.disabled,
    };
    let member = state
        .store
        .update_member(&principal.actor, &principal.workspace_id, id, change)
        .await?;
    Ok(member.into())
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
    remove(&state, &principal, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn remove(state: &AppState, principal: &Principal, id: &str) -> ApiResult<()> {
    principal.require(Permission::WorkspaceAdmin)?;
    state
        .store
        .delete_member(&principal.actor, &principal.workspace_id, id)
        .await?;
    Ok(())
}
