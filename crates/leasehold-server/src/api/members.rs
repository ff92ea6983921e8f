use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, Principal};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use leasehold_core::{Permission, Role};
use leasehold_proto::ErrorBody;
use leasehold_store::NewMember;
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
    principal.require(Permission::WorkspaceAdmin)?;
    let email = body.email.trim().to_lowercase();
    if !email.contains('@') || email.len() > 254 {
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
    Ok((
        StatusCode::CREATED,
        Json(MemberOut {
            id: member.id,
            email: member.email,
            role: member.role,
        }),
    ))
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
    Ok(Json(
        members
            .into_iter()
            .map(|m| MemberOut {
                id: m.id,
                email: m.email,
                role: m.role,
            })
            .collect(),
    ))
}
