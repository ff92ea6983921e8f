//! Extractors that turn every malformed request into 400 `INVALID_REQUEST` naming the
//! field, and the bearer-token principal.

use crate::error::ApiError;
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use leasehold_core::{Permission, Role};
use leasehold_store::{Actor, PageRequest};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Names the field a serde error is about: the path where it failed, or for a
/// missing or unknown field, that field (serde puts those at the parent's path).
fn field_of(path: &serde_path_to_error::Path, message: &str) -> String {
    let path = path.to_string();
    let named = message
        .split_once("field `")
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(name, _)| name);
    match (path.as_str(), named) {
        (".", Some(name)) => name.to_string(),
        (".", None) => "body".to_string(),
        (parent, Some(name)) if message.starts_with("missing field") => format!("{parent}.{name}"),
        (path, _) => path.to_string(),
    }
}

/// A JSON body. Unlike `axum::Json`, every failure is our error shape with the field.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json");
        if !content_type.starts_with("application/json") {
            return Err(ApiError::invalid(
                "body",
                "send JSON with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::invalid("body", format!("is larger than {BODY_LIMIT} bytes"))
            } else {
                ApiError::invalid("body", rejection.body_text())
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parses a request body, which is always a JSON object.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::invalid("body", "must be a JSON object"));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = field_of(e.path(), &e.inner().to_string());
        let message = e.inner().to_string();
        // serde_json appends " at line 1 column 9": keep the message readable.
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_string();
        ApiError::invalid(field, message)
    })?;
    de.end()
        .map_err(|_| ApiError::invalid("body", "trailing characters after the JSON value"))?;
    Ok(value)
}

/// A query string, with the same error shape as [`ApiJson`].
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(ApiQuery)
            .map_err(|e| {
                let field = field_of(e.path(), &e.inner().to_string());
                ApiError::invalid(field, e.inner().to_string())
            })
    }
}

/// `?cursor=&limit=` as every list takes it.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct Paging {
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Items per page, 1–200 (default 50).
    pub limit: Option<u32>,
}

impl Paging {
    pub fn request(&self) -> Result<PageRequest, ApiError> {
        let limit = self.limit.unwrap_or(PageRequest::DEFAULT_LIMIT);
        if !(1..=PageRequest::MAX_LIMIT).contains(&limit) {
            return Err(ApiError::invalid("limit", "must be between 1 and 200"));
        }
        Ok(PageRequest {
            cursor: self.cursor.clone().filter(|c| !c.is_empty()),
            limit,
        })
    }
}

/// The hash an API token is stored and found by. Tokens carry 256 random bits, so a
/// plain SHA-256 suffices (no password-style stretching needed).
pub fn token_hash(token: &str) -> String {
    crate::secrets::hex(&Sha256::digest(token.as_bytes()))
}

/// Who is calling the admin API, from `Authorization: Bearer <token>`.
#[derive(Debug, Clone)]
pub struct Principal {
    pub workspace_id: String,
    pub role: Role,
    pub actor: Actor,
}

impl Principal {
    /// 403 `FORBIDDEN` unless the caller's role grants `permission`.
    pub fn require(&self, permission: Permission) -> Result<(), ApiError> {
        if self.role.allows(permission) {
            Ok(())
        } else {
            Err(ApiError::forbidden(permission.as_str()))
        }
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Principal::authenticate(state, &parts.headers, parts.method.is_safe()).await
    }
}

impl Principal {
    /// Who these request headers (a bearer token, or for a `safe` request a console
    /// session cookie) speak for, as the store says now; 401 for nobody. Long-lived
    /// answers (the live stream) call it again to notice a revoked token or an ended
    /// session.
    pub async fn authenticate(
        state: &AppState,
        headers: &axum::http::HeaderMap,
        safe: bool,
    ) -> Result<Principal, ApiError> {
        let bearer = headers.get(header::AUTHORIZATION).is_some();
        // A console session may read the API (the live stream, fragments); changes need a
        // token, so a cross-site form can never make one with the session cookie.
        if !bearer && safe {
            if let Some(session) = crate::session::session_from_headers(state, headers).await? {
                return Ok(session.principal);
            }
        }
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(ApiError::unauthorized)?;
        let record = state
            .store
            .token_by_hash(&token_hash(token))
            .await?
            .ok_or_else(ApiError::unauthorized)?;
        Ok(Principal {
            workspace_id: record.workspace_id,
            role: record.role,
            actor: Actor {
                kind: "token",
                id: Some(record.id),
                label: record.name,
            },
        })
    }
}
