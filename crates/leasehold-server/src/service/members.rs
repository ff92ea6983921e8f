//! The workspace's console members.

use crate::error::{ApiError, ApiResult};
use crate::extract::Principal;
use crate::AppState;
use leasehold_core::{Permission, Role};
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

pub(crate) async fn remove(state: &AppState, principal: &Principal, id: &str) -> ApiResult<()> {
    principal.require(Permission::WorkspaceAdmin)?;
    state
        .store
        .delete_member(&principal.actor, &principal.workspace_id, id)
        .await?;
    Ok(())
}
