//! The one error type of the HTTP layer, mapped once to DESIGN's error shape.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use leasehold_core::ReleaseReason;
use leasehold_proto::{ErrorBody, ErrorDetail};
use leasehold_store::StoreError;
use serde_json::json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Option<serde_json::Value>,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    pub fn retry_after(mut self, seconds: u64) -> ApiError {
        self.retry_after = Some(seconds.max(1));
        self
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
            StoreError::NoSeats {
                seats_total,
                seats_used,
                next_expiry_ms,
                queued,
                queue_position,
            } => {
                // A waiter asks again soon (each ask keeps its place); anyone else, when a
                // held lease would lapse without heartbeats (a checkin can come sooner).
                let retry_after_s = match queue_position {
                    Some(_) => 1,
                    None => next_expiry_ms
                        .map(|at| (at - chrono::Utc::now().timestamp_millis() + 999) / 1000)
                        .unwrap_or(60)
                        .clamp(1, 3600),
                };
                let message = match (queue_position, queued) {
                    (Some(1), _) => format!(
                        "all {seats_total} seats of this license are in use; you are next in the queue"
                    ),
                    (Some(position), _) => format!(
                        "all {seats_total} seats of this license are in use; {} people are ahead of you in the queue",
                        position - 1
                    ),
                    (None, 0) => format!("all {seats_total} seats of this license are in use"),
                    (None, queued) => format!(
                        "all {seats_total} seats of this license are in use or kept for the {queued} waiting in its queue"
                    ),
                };
                let mut details = json!({
                    "seats_total": seats_total, "seats_used": seats_used,
                    "retry_after_s": retry_after_s, "queued": queued
                });
                if let Some(position) = queue_position {
                    details["queue_position"] = json!(position);
                }
                ApiError::new(StatusCode::CONFLICT, "NO_SEATS", message)
                    .with_details(details)
                    .retry_after(retry_after_s as u64)
            }
            StoreError::InstanceLimit { limit } => ApiError::new(
                StatusCode::CONFLICT,
                "INSTANCE_LIMIT",
                format!("this lease counts its {limit} instances already (the policy's max_instances_per_lease): check one in first"),
            )
            .with_details(json!({ "limit": limit })),
            StoreError::ReleaseLimit { limit } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "RELEASE_LIMIT",
                format!("this license allows {limit} self-service releases a month; ask an admin"),
            )
            .with_details(json!({ "limit": limit })),
            StoreError::ReleaseCooldown { retry_after_s } => ApiError::new(
                StatusCode::CONFLICT,
                "RELEASE_COOLDOWN",
                format!("an admin released this seat; it can be taken again in {retry_after_s} s"),
            )
            .with_details(json!({ "retry_after_s": retry_after_s }))
            .retry_after(retry_after_s as u64),
            StoreError::NotInForce(status) => {
                let (code, message) = status
                    .refusal()
                    .unwrap_or(("EXPIRED", "the license has expired"));
                ApiError::new(StatusCode::FORBIDDEN, code, message)
            }
            StoreError::LeaseEnded(reason) => ApiError::new(
                StatusCode::GONE,
                "LEASE_EXPIRED",
                match reason {
                    ReleaseReason::Idle => {
                        "the seat went to someone who needed it while this app was idle: take a new one"
                    }
                    ReleaseReason::Expired => "the lease has expired: take a new one",
                    _ => "the lease was released: take a new one",
                },
            )
            .with_details(json!({ "reason": reason })),
            StoreError::BorrowNotAllowed => ApiError::new(
                StatusCode::FORBIDDEN,
                "BORROW_NOT_ALLOWED",
                "borrowing is off for this license",
            ),
            StoreError::BorrowLimit { limit } => ApiError::new(
                StatusCode::CONFLICT,
                "BORROW_LIMIT",
                format!("all {limit} seats of this license that may be borrowed are out"),
            )
            .with_details(json!({ "limit": limit })),
            StoreError::LastOwner => ApiError::new(
                StatusCode::CONFLICT,
                "LAST_OWNER",
                "this is the workspace's last owner who can sign in: make another member an owner first",
            ),
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
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}
