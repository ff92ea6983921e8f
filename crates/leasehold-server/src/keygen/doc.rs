//! Keygen's JSON:API documents: licenses and machines as Keygen clients read them, and
//! its error documents (`{"errors": [{title, detail, code, source?}]}`).

use crate::convert;
use crate::error::ApiError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use leasehold_core::{effective_status, EffectiveStatus, SeatKind, SeatModel};
use leasehold_store::{today, License, Seat};
use serde_json::{json, Value};

/// JSON:API's media type, as Keygen answers it.
pub(super) const JSON_API: &str = "application/vnd.api+json; charset=utf-8";

/// A time as Keygen writes it (RFC 3339, milliseconds, `Z`).
pub(super) fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn time_ms(ms: i64) -> String {
    time(convert::time(ms))
}

/// A JSON:API document answer.
pub(super) fn document(status: StatusCode, document: &Value) -> Response {
    let mut response = (status, document.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_API));
    response
}

fn relation(kind: &str, id: &str) -> Value {
    json!({ "data": { "type": kind, "id": id } })
}

/// A license resource. `key` is the key as the client sent it (Leasehold keeps only
/// its hash and a sealed copy).
pub(super) fn license(license: &License, key: &str) -> Value {
    let standing = effective_status(license.status, license.expires_on, today());
    let status = match standing {
        EffectiveStatus::Active => "ACTIVE",
        EffectiveStatus::Suspended => "SUSPENDED",
        EffectiveStatus::Expired => "EXPIRED",
        // Never answered: a revoked license is an unknown one to the facade.
        EffectiveStatus::Revoked => "BANNED",
    };
    let concurrent = license.seat_model == SeatModel::Concurrent;
    json!({
        "id": license.id,
        "type": "licenses",
        "attributes": {
            "name": license.licensed_to,
            "key": key,
            "expiry": crate::client::files::license_end(license).map(time),
            "status": status,
            "uses": 0,
            "suspended": standing == EffectiveStatus::Suspended,
            "scheme": null,
            "encrypted": false,
            "strict": false,
            "floating": concurrent || license.seats_total > 1,
            "protected": true,
            "version": license.version,
            "maxMachines": i32::try_from(license.seats_total).unwrap_or(i32::MAX),
            "maxProcesses": null,
            "maxUsers": null,
            "maxCores": null,
            "maxUses": null,
            "requireHeartbeat": concurrent,
            "requireCheckIn": false,
            "lastValidated": null,
            "lastCheckOut": null,
            "lastCheckIn": null,
            "nextCheckIn": null,
            "permissions": [],
            "metadata": {
                "seatModel": license.seat_model,
                "type": license.license_type,
                "seatsUsed": license.seats_used,
            },
            "created": time_ms(license.created_at),
            "updated": time_ms(license.updated_at),
        },
        "relationships": {
            "product": relation("products", &license.application_id),
            "policy": relation("policies", &license.id),
        },
    })
}

/// A lease that lapsed, or a borrow whose time is up, that the sweeper has not ended yet.
pub(super) fn dead(seat: &Seat) -> bool {
    seat.kind != SeatKind::Activation
        && seat
            .expires_at
            .is_some_and(|at| at <= Utc::now().timestamp_millis())
}

/// A machine resource: a seat a machine holds (an activation, a lease or a borrow).
/// Its heartbeat is `DEAD` once its seat lapsed, else `ALIVE`: a node-locked machine
/// needs none and is alive while activated (Keygen says `NOT_STARTED` until a first ping;
/// Leasehold does not record a node-locked machine's pings).
pub(super) fn machine(seat: &Seat, license: &License) -> Value {
    let heartbeat = seat.kind == SeatKind::Lease;
    json!({
        "id": seat.id,
        "type": "machines",
        "attributes": {
            "fingerprint": seat.fingerprint.clone().unwrap_or_default(),
            "name": seat.identifier,
            "hostname": seat.identifier,
            "platform": null,
            "ip": null,
            "cores": null,
            "requireHeartbeat": heartbeat,
            "heartbeatStatus": if dead(seat) { "DEAD" } else { "ALIVE" },
            "heartbeatDuration": heartbeat.then(|| i32::try_from(license.lease_ttl_s).unwrap_or(i32::MAX)),
            "lastHeartbeat": seat.last_seen_at.filter(|_| heartbeat).map(time_ms),
            "nextHeartbeat": seat.expires_at.filter(|_| heartbeat).map(time_ms),
            "metadata": {
                "seatKind": seat.kind,
                "osUser": seat.os_user,
                "borrowedUntil": seat.expires_at.filter(|_| seat.kind == SeatKind::Borrow).map(time_ms),
            },
            "created": time_ms(seat.created_at),
            "updated": time_ms(seat.last_seen_at.unwrap_or(seat.created_at)),
        },
        "relationships": {
            "license": relation("licenses", &seat.license_id),
            "product": relation("products", &license.application_id),
        },
    })
}

/// A Keygen error answer.
#[derive(Debug)]
pub(super) struct KgError {
    pub(super) status: StatusCode,
    pub(super) code: &'static str,
    pub(super) detail: String,
    pub(super) source: Option<Source>,
    /// Leasehold's own code, where Keygen's says less (`meta.leaseholdCode`).
    pub(super) leasehold_code: Option<&'static str>,
    pub(super) retry_after: Option<u32>,
}

/// What in the request an error is about.
#[derive(Debug, Clone, Copy)]
pub(super) enum Source {
    /// `source.pointer`, into the request document.
    Pointer(&'static str),
    /// `source.parameter`, a query parameter.
    Parameter(&'static str),
}

pub(super) type KgResult<T> = Result<T, KgError>;

impl KgError {
    pub(super) fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        KgError {
            status,
            code,
            detail: detail.into(),
            source: None,
            leasehold_code: None,
            retry_after: None,
        }
    }

    pub(super) fn at(mut self, pointer: &'static str) -> Self {
        self.source = Some(Source::Pointer(pointer));
        self
    }

    pub(super) fn parameter(mut self, parameter: &'static str) -> Self {
        self.source = Some(Source::Parameter(parameter));
        self
    }

    /// 401 `LICENSE_INVALID`: the key is unknown (or revoked, or none was given).
    pub(super) fn license_invalid() -> Self {
        KgError::new(
            StatusCode::UNAUTHORIZED,
            "LICENSE_INVALID",
            "You must be authenticated to complete the request",
        )
    }

    pub(super) fn suspended() -> Self {
        KgError::new(
            StatusCode::FORBIDDEN,
            "LICENSE_SUSPENDED",
            "License is suspended",
        )
    }

    pub(super) fn not_found(what: &str, id: &str) -> Self {
        KgError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("The requested {what} '{id}' was not found"),
        )
    }

    pub(super) fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        KgError::new(StatusCode::BAD_REQUEST, code, detail)
    }

    fn title(&self) -> &'static str {
        match self.status {
            StatusCode::BAD_REQUEST => "Bad request",
            StatusCode::UNAUTHORIZED => "Unauthorized",
            StatusCode::FORBIDDEN => "Access denied",
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::METHOD_NOT_ALLOWED => "Method not allowed",
            StatusCode::CONFLICT => "Conflict",
            StatusCode::UNPROCESSABLE_ENTITY => "Unprocessable resource",
            StatusCode::TOO_MANY_REQUESTS => "Too many requests",
            s if s.is_server_error() => "Internal server error",
            _ => "Request failed",
        }
    }
}

impl From<ApiError> for KgError {
    /// Leasehold's refusals in Keygen's words, where Keygen has them (DESIGN §9).
    fn from(error: ApiError) -> KgError {
        let detail_of = |key: &str| error.details.as_ref().and_then(|d| d.get(key)).cloned();
        let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
        let mapped = match error.code {
            "NO_SEATS" => {
                let total = detail_of("seats_total").unwrap_or(Value::Null);
                KgError::new(
                    unprocessable,
                    "MACHINE_LIMIT_EXCEEDED",
                    format!("machine count has exceeded maximum allowed for license ({total})"),
                )
                .at("/data")
            }
            // Never 429: Keygen clients read every 429 as rate limiting.
            "RELEASE_LIMIT" => KgError {
                leasehold_code: Some("RELEASE_LIMIT"),
                ..KgError::new(
                    unprocessable,
                    "DEACTIVATIONS_LIMIT_EXCEEDED",
                    error.message.clone(),
                )
                .at("/data/attributes/deactivations")
            },
            "RELEASE_COOLDOWN" | "INSTANCE_LIMIT" | "BORROW_LIMIT" => {
                KgError::new(unprocessable, error.code, error.message.clone())
            }
            "LEASE_EXPIRED" => KgError::new(unprocessable, "MACHINE_HEARTBEAT_DEAD", "is dead"),
            "SUSPENDED" => KgError::suspended(),
            "EXPIRED" => KgError::new(
                StatusCode::FORBIDDEN,
                "LICENSE_EXPIRED",
                "License is expired",
            ),
            "REVOKED" | "UNAUTHORIZED" => KgError::license_invalid(),
            _ => KgError::new(error.status, error.code, error.message.clone()),
        };
        KgError {
            retry_after: error
                .retry_after
                .map(|s| u32::try_from(s).unwrap_or(u32::MAX)),
            ..mapped
        }
    }
}

impl From<leasehold_store::StoreError> for KgError {
    fn from(error: leasehold_store::StoreError) -> KgError {
        ApiError::from(error).into()
    }
}

impl IntoResponse for KgError {
    fn into_response(self) -> Response {
        let mut error = json!({
            "title": self.title(),
            "detail": self.detail,
            "code": self.code,
        });
        match self.source {
            Some(Source::Pointer(pointer)) => error["source"] = json!({ "pointer": pointer }),
            Some(Source::Parameter(parameter)) => {
                error["source"] = json!({ "parameter": parameter })
            }
            None => {}
        }
        if let Some(code) = self.leasehold_code {
            error["meta"] = json!({ "leaseholdCode": code });
        }
        let mut response = document(self.status, &json!({ "errors": [error] }));
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
