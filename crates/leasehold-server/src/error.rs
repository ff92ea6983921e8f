//! The one error type of the HTTP layer, mapped once to DESIGN's error shape.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use leasehold_proto::{ErrorBody, ErrorDetail};
use leasehold_store::StoreError;
use serde_json::json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Option<serde_json::Value>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }

    pub fn with_details(mut self, details: serde_json::Value) -> ApiError {
        self.details = Some(details);
        self
    }

    /// 400 `INVALID_REQUEST` naming the offending field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        let field = field.into();
        let message = message.into();
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            format!("{field}: {message}"),
        )
        .with_details(json!({ "field": field }))
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "a valid API token is required (Authorization: Bearer …)",
        )
    }

    pub fn forbidden(permission: &str) -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            format!("this needs the {permission} permission"),
        )
        .with_details(json!({ "permission": permission }))
    }

    pub fn not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such resource")
    }

    pub fn internal() -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "internal error",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        match error {
            StoreError::NotFound => ApiError::not_found(),
            StoreError::Invalid { field, message } => ApiError::invalid(field, message),
            StoreError::Conflict(message) => ApiError::new(StatusCode::CONFLICT, "CONFLICT", message),
            StoreError::SeatOverAllocated { seats_total, seats_used } => ApiError::new(
                StatusCode::CONFLICT,
                "SEAT_OVER_ALLOCATED",
                "Seat over-allocated: reclaim a seat or raise Seats Total",
            )
            .with_details(json!({ "seats_total": seats_total, "seats_used": seats_used })),
            StoreError::SeatsInUse { requested, seats_used } => ApiError::new(
                StatusCode::CONFLICT,
                "CONFLICT",
                format!("seats_total cannot go below the {seats_used} seats in use; reclaim seats first"),
            )
            .with_details(json!({ "field": "seats_total", "requested": requested, "seats_used": seats_used })),
            other => {
                tracing::error!(error = %other, "store failure");
                ApiError::internal()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
                details: self.details,
            },
        };
        (self.status, Json(body)).into_response()
    }
}
