use crate::error::{ApiError, ApiResult};
use crate::extract::Principal;
use crate::AppState;
use axum::extract::State;
use axum::Json;
use leasehold_core::Permission;
use leasehold_proto::ErrorBody;
use serde::Serialize;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WorkspaceOut {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub currency: String,
    pub reminder_lead_days: Vec<u32>,
    /// What the calling token may do.
    pub permissions: Vec<String>,
}

/// The caller's workspace and permissions.
#[utoipa::path(get, path = "/v1/workspace", tag = "workspace", security(("bearer" = [])),
    responses((status = 200, body = WorkspaceOut), (status = 401, body = ErrorBody)))]
pub async fn get_workspace(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<Json<WorkspaceOut>> {
    principal.require(Permission::LicenseView)?;
    let workspace = state.store.workspace(&principal.workspace_id).await?;
    let lead_days = workspace.lead_days().map_err(ApiError::from)?;
    Ok(Json(WorkspaceOut {
        id: workspace.id,
        name: workspace.name,
        slug: workspace.slug,
        currency: workspace.currency,
        reminder_lead_days: lead_days,
        permissions: principal
            .role
            .permissions()
            .iter()
            .map(|p| p.as_str().to_string())
            .collect(),
    }))
}
