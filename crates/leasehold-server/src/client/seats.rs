//! Seats over the client protocol: validate, activations and leases.

use super::*;
use crate::binding::Echo;
use crate::error::ApiResult;
use crate::extract::{parse_json, ApiJson};
use crate::license_cache::Need;
use crate::signing::Repeats;
use crate::{convert, AppState};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::SubsecRound;
use leasehold_core::{effective_status, SeatKind, SeatModel};

/// The longest idleness a heartbeat may report (`idle_s`).
const TEN_YEARS_S: i64 = 10 * 366 * 24 * 3600;
use leasehold_store::{today, LeaseHolder, StoreError};

/// Checks a license key (and, for a dedicated license, that this machine holds a seat).
/// The answer is signed and bound to the request (see `Binding`).
#[utoipa::path(post, path = "/v1/client/validate", tag = "client", request_body = ValidateRequest,
    responses(KeyedRefusals,
        (status = 200, body = ValidateAnswer, description = "Signed; an unknown key is `NOT_FOUND` with `license: null`")))]
pub(super) async fn validate(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ValidateRequest>,
) -> Response {
    let echo = Echo::new(
        body.nonce.as_deref(),
        body.fingerprint.as_deref(),
        body.os_user.as_deref(),
    );
    let mut response = match echo.check() {
        Ok(()) => validation(state, headers, body).await,
        Err(error) => error.into_response(),
    };
    response.extensions_mut().insert(Repeats::Often);
    echoing(response, echo)
}

/// The answer to a validation. Checked to the second, so that a license's answer is one
/// body all through a second, signed once (Ed25519 is deterministic: the remembered
/// signature is the one signing again would give).
pub(super) async fn validation(
    state: AppState,
    headers: HeaderMap,
    body: ValidateRequest,
) -> Response {
    let checked_at = chrono::Utc::now().trunc_subsecs(0);
    let caller = match Caller::resolve(&state, &headers, body.key.as_deref(), Need::SeatCount).await
    {
        Ok(Some(caller)) => caller,
        Ok(None) => {
            let answer = ValidateAnswer {
                valid: false,
                code: "NOT_FOUND".into(),
                license: None,
                checked_at,
            };
            return (StatusCode::OK, Json(answer)).into_response();
        }
        Err(error) => return error.into_response(),
    };
    let result = async {
        let fingerprint = optional("fingerprint", body.fingerprint.as_deref())?;
        optional("os_user", body.os_user.as_deref())?;
        let license = &caller.license;
        let standing = effective_status(license.status, license.expires_on, today());
        let code = match standing.refusal() {
            Some((code, _)) => code,
            None => match (license.seat_model, fingerprint.as_deref()) {
                (SeatModel::Dedicated, Some(fingerprint))
                    if state
                        .store
                        .held_seat(&license.id, SeatKind::Activation, fingerprint)
                        .await?
                        .is_none() =>
                {
                    "NOT_ACTIVATED"
                }
                _ => "VALID",
            },
        };
        Ok((
            StatusCode::OK,
            ValidateAnswer {
                valid: code == "VALID",
                code: code.into(),
                license: Some(client_license(license)),
                checked_at,
            },
        ))
    }
    .await;
    caller.reply(result)
}

/// Takes a dedicated (node-locked) seat for a machine.
#[utoipa::path(post, path = "/v1/client/activations", tag = "client", request_body = ActivateRequest,
    responses(KeyedRefusals,
        (status = 201, body = Activation, description = "A new seat"),
        (status = 200, body = Activation, description = "This machine holds a seat already"),
        (status = 403, description = "The license is not in force (`SUSPENDED`, `REVOKED`, `EXPIRED`)", body = ErrorBody),
        (status = 404, description = "No license has this key", body = ErrorBody),
        (status = 409, description = "`NO_SEATS`, or `RELEASE_COOLDOWN` after an admin released this machine", body = ErrorBody)))]
pub(super) async fn activate(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ActivateRequest>,
) -> Response {
    answer!(
        state,
        headers,
        body.key.as_deref(),
        Need::Settings,
        Echo::new(body.nonce.as_deref(), Some(&body.fingerprint), None),
        |caller| {
            caller.require_in_force()?;
            caller.require_model(SeatModel::Dedicated)?;
            let fingerprint = text("fingerprint", &body.fingerprint)?;
            let identifier = optional("identifier", body.identifier.as_deref())?;
            let (seat, created) = state
                .store
                .activate(&caller.license, &fingerprint, identifier.as_deref())
                .await?;
            caller.publish(&state, "seat.activated");
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok((
                status,
                ActivationAnswer {
                    id: seat.id,
                    identifier: seat.identifier,
                    activated_at: convert::time(seat.created_at),
                },
            ))
        }
    )
}

/// Reads an optional JSON body (GET/DELETE callers may send none).
pub(crate) fn optional_body<T: serde::de::DeserializeOwned + Default>(
    bytes: &[u8],
) -> ApiResult<T> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        parse_json(bytes)
    }
}

/// Frees this machine's dedicated seat, to move the license.
#[utoipa::path(delete, path = "/v1/client/activations/{fingerprint}", tag = "client", request_body = KeyOnly,
    params(("fingerprint" = String, Path)),
    responses(KeyedRefusals,
        (status = 200, body = Deactivated),
        (status = 404, description = "No license has this key, or the machine holds no seat", body = ErrorBody),
        (status = 429, description = "`RELEASE_LIMIT`: the month's self-service releases are used up", body = ErrorBody)))]
pub(super) async fn deactivate(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(fingerprint): Path<String>,
    body: Bytes,
) -> Response {
    let body: KeyOnly = match optional_body(&body) {
        Ok(body) => body,
        Err(error) => return error.into_response(),
    };
    answer!(
        state,
        headers,
        body.key.as_deref(),
        Need::Settings,
        Echo::new(body.nonce.as_deref(), Some(&fingerprint), None),
        |caller| {
            caller.require_model(SeatModel::Dedicated)?;
            let fingerprint = text("fingerprint", &fingerprint)?;
            let seat = state
                .store
                .deactivate(&caller.license, &fingerprint)
                .await?;
            caller.publish(&state, "seat.released");
            Ok((
                StatusCode::OK,
                Deactivated {
                    id: seat.id,
                    released_at: convert::time(seat.released_at.unwrap_or(seat.created_at)),
                },
            ))
        }
    )
}

/// Takes a concurrent (floating) seat, or joins the lease this machine and OS user hold.
#[utoipa::path(post, path = "/v1/client/leases", tag = "client", request_body = LeaseRequest,
    responses(KeyedRefusals,
        (status = 201, body = Lease, description = "A new lease"),
        (status = 200, body = Lease, description = "Joined the holder's lease"),
        (status = 403, description = "The license is not in force", body = ErrorBody),
        (status = 404, description = "No license has this key", body = ErrorBody),
        (status = 400, description = "`INVALID_REQUEST`: a field, or `wait_s` past 60 or without `queue`", body = ErrorBody),
        (status = 409, description = "`NO_SEATS` (with `retry_after_s`, `queued`, and for a waiter `queue_position`), `RELEASE_COOLDOWN` or `INSTANCE_LIMIT`", body = ErrorBody)))]
pub(super) async fn take_lease(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<LeaseRequest>,
) -> Response {
    answer!(
        state,
        headers,
        body.key.as_deref(),
        Need::Settings,
        Echo::new(
            body.nonce.as_deref(),
            Some(&body.fingerprint),
            Some(&body.os_user)
        ),
        |caller| {
            caller.require_in_force()?;
            caller.require_model(SeatModel::Concurrent)?;
            let queue = body.queue.unwrap_or(false);
            let wait_s = body.wait_s.unwrap_or(0);
            if wait_s > MAX_WAIT_S {
                return Err(ApiError::invalid("wait_s", "must be between 0 and 60"));
            }
            if wait_s > 0 && !queue {
                return Err(ApiError::invalid(
                    "wait_s",
                    "waits in the queue: set queue: true",
                ));
            }
            let holder = LeaseHolder {
                fingerprint: text("fingerprint", &body.fingerprint)?,
                os_user: text("os_user", &body.os_user)?,
                identifier: optional("identifier", body.identifier.as_deref())?,
                instance: text("instance", &body.instance)?,
                queue,
            };
            let (seat, created) = take_waiting(&state, &caller, &holder, wait_s).await?;
            caller.publish(&state, "seat.taken");
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let seat = convert::seat(seat);
            Ok((
                status,
                Lease {
                    id: seat.id,
                    expires_at: seat.expires_at.unwrap_or(seat.created_at),
                    heartbeat_interval_s: caller.license.policy().heartbeat_every_s(),
                    instances: seat.instances,
                },
            ))
        }
    )
}

/// The longest a checkout waits in the queue for its turn (DESIGN §7).
const MAX_WAIT_S: u32 = 60;

/// Takes a lease; a caller that waits in the queue asks again while `wait_s` lasts, each
/// time a seat of the license may have been freed (a check-in, an admin's release or
/// change, a waiter leaving, on any node) and at least every second (which also keeps
/// its place and catches leases that lapsed).
async fn take_waiting(
    state: &AppState,
    caller: &Caller,
    holder: &LeaseHolder,
    wait_s: u32,
) -> ApiResult<(leasehold_store::Seat, bool)> {
    let license = &caller.license;
    if wait_s == 0 {
        return Ok(state.store.take_lease(license, holder).await?);
    }
    let mut events = state.live.subscribe();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(u64::from(wait_s));
    let mut announced = false;
    loop {
        match state.store.take_lease(license, holder).await {
            Err(StoreError::NoSeats {
                queue_position: Some(_),
                ..
            }) if tokio::time::Instant::now() < deadline => {
                // The live view learns of the place once; the final answer tells it again.
                if !announced {
                    caller.publish(state, "seat.queued");
                    announced = true;
                }
                let turn = deadline
                    .saturating_duration_since(tokio::time::Instant::now())
                    .min(std::time::Duration::from_secs(1));
                let _ =
                    tokio::time::timeout(turn, seat_may_be_free(&mut events, &license.id)).await;
            }
            other => return Ok(other?),
        }
    }
}

/// Returns once a live event says a seat of `license_id` may have been freed.
async fn seat_may_be_free(
    events: &mut tokio::sync::broadcast::Receiver<crate::live::LiveEvent>,
    license_id: &str,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match events.recv().await {
            Ok(event)
                if event.license_id == license_id
                    && matches!(
                        event.kind.as_str(),
                        "seat.released" | "seat.returned" | "seat.dequeued" | "license.updated"
                    ) =>
            {
                return
            }
            Ok(_) => {}
            // Missed events: ask again now.
            Err(RecvError::Lagged(_)) => return,
            // No more events: the caller's one-second turn is the only wake-up.
            Err(RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}

/// A holder gives up its place in the license's queue (DESIGN §7).
#[utoipa::path(post, path = "/v1/client/queue/leave", tag = "client", request_body = LeaveQueueRequest,
    responses(KeyedRefusals,
        (status = 200, body = LeftQueue, description = "`left`: whether the holder had a place"),
        (status = 404, description = "No license has this key", body = ErrorBody)))]
pub(super) async fn leave_queue(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<LeaveQueueRequest>,
) -> Response {
    answer!(
        state,
        headers,
        body.key.as_deref(),
        Need::Settings,
        Echo::new(
            body.nonce.as_deref(),
            Some(&body.fingerprint),
            Some(&body.os_user)
        ),
        |caller| {
            let fingerprint = text("fingerprint", &body.fingerprint)?;
            let os_user = text("os_user", &body.os_user)?;
            let left = state
                .store
                .leave_queue(&caller.license, &fingerprint, &os_user)
                .await?;
            if left {
                caller.publish(&state, "seat.dequeued");
            }
            Ok((StatusCode::OK, LeftQueue { left }))
        }
    )
}

/// Keeps a lease alive: pushes its expiry by the license's lease period.
#[utoipa::path(post, path = "/v1/client/leases/{id}/heartbeat", tag = "client", request_body = HeartbeatRequest,
    params(("id" = String, Path)),
    responses(KeyedRefusals,
        (status = 200, body = HeartbeatAnswer),
        (status = 404, description = "No license has this key", body = ErrorBody),
        (status = 409, description = "`INSTANCE_LIMIT`: a new instance would pass the policy's limit", body = ErrorBody),
        (status = 410, description = "`LEASE_EXPIRED`: take a new lease", body = ErrorBody)))]
pub(super) async fn heartbeat(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<HeartbeatRequest>,
) -> Response {
    answer!(
        state,
        headers,
        body.key.as_deref(),
        Need::Settings,
        Echo::new(body.nonce.as_deref(), None, None),
        |caller| {
            let instance = text("instance", &body.instance)?;
            if body
                .idle_s
                .is_some_and(|idle| !(0..=TEN_YEARS_S).contains(&idle))
            {
                return Err(ApiError::invalid(
                    "idle_s",
                    "must be between 0 and ten years, in seconds",
                ));
            }
            let beaten = state
                .heartbeat(&caller.license, &id, &instance, body.idle_s)
                .await?;
            caller.publish(&state, beaten.kind());
            Ok((
                StatusCode::OK,
                HeartbeatAnswer {
                    expires_at: convert::time(beaten.expires_at),
                },
            ))
        }
    )
}

/// One instance exits; the seat is freed with the lease's last instance.
#[utoipa::path(delete, path = "/v1/client/leases/{id}/instances/{instance}", tag = "client", request_body = KeyOnly,
    params(("id" = String, Path), ("instance" = String, Path)),
    responses(KeyedRefusals,
        (status = 200, body = InstanceReleased),
        (status = 404, description = "No license has this key, or no such lease", body = ErrorBody)))]
pub(super) async fn release_instance(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, instance)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let body: KeyOnly = match optional_body(&body) {
        Ok(body) => body,
        Err(error) => return error.into_response(),
    };
    answer!(
        state,
        headers,
        body.key.as_deref(),
        Need::Settings,
        Echo::new(body.nonce.as_deref(), None, None),
        |caller| {
            let instance = text("instance", &instance)?;
            let released = state
                .store
                .release_instance(&caller.license, &id, &instance)
                .await?;
            caller.publish(
                &state,
                if released {
                    "seat.released"
                } else {
                    "seat.instance_exited"
                },
            );
            Ok((StatusCode::OK, InstanceReleased { released }))
        }
    )
}
