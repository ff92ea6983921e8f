use crate::convert;
use crate::error::ApiResult;
use crate::extract::{token_hash, ApiJson, ApiQuery, Paging, Principal};
use crate::service::required_text;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use leasehold_core::Permission;
use leasehold_proto::{CreateToken, ErrorBody, Page, Token, TokenCreated};
use leasehold_store::NewToken;

/// Creates an API token with a role's permissions. The token is in this answer only.
#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", request_body = CreateToken,
    security(("bearer" = [])),
    responses((status = 201, body = TokenCreated), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn create_token(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateToken>,
) -> ApiResult<(StatusCode, Json<TokenCreated>)> {
    principal.require(Permission::WorkspaceAdmin)?;
    let name = required_text("name", &body.name, 100)?;
    let token = crate::new_api_token();
    let record = state
        .store
        .create_token(
            &principal.actor,
            &principal.workspace_id,
            NewToken {
                name,
                role: body.role,
                token_hash: token_hash(&token),
            },
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(TokenCreated {
            id: record.id,
            name: record.name,
            role: record.role,
            token,
            created_at: convert::time(record.created_at),
        }),
    ))
}

/// The workspace's tokens (never their secrets), newest first.
#[utoipa::path(get, path = "/v1/tokens", tag = "tokens", params(Paging), security(("bearer" = [])),
    responses((status = 200, body = Page<Token>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_tokens(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(paging): ApiQuery<Paging>,
) -> ApiResult<Json<Page<Token>>> {
    principal.require(Permission::WorkspaceAdmin)?;
    let page = state
        .store
        .list_tokens(&principal.workspace_id, &paging.request()?)
        .await?;
    Ok(Json(convert::page(page, convert::token)))
}

/// Revokes a token; it stops working at once.
#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "tokens", security(("bearer" = [])),
    params(("id" = String, Path, description = "token id")),
    responses((status = 200, body = Token), (status = 404, body = ErrorBody)))]
pub async fn revoke_token(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Token>> {
    principal.require(Permission::WorkspaceAdmin)?;
    let token = state
        .store
        .revoke_token(&principal.actor, &principal.workspace_id, &id)
        .await?;
    Ok(Json(convert::token(token)))
}
