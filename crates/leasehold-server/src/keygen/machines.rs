//! Machines: a seat a machine holds. On a dedicated license an activation; on a
//! concurrent one a lease of no OS user with the one instance `keygen` (its ping is a
//! heartbeat, its deletion a check-in); a borrow shows as the machine it was lent to.

use super::doc::{self, KgError, KgResult};
use super::KeygenRefusals;
use super::{body_or_default, Licensee, Slug};
use crate::client::{optional, publish_refusal, text};
use crate::error::ApiResult;
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use leasehold_core::lease::Instances;
use leasehold_core::{SeatKind, SeatModel};
use leasehold_store::{LeaseHolder, Seat, StoreError};
use serde::Deserialize;

/// The one instance a Keygen machine's lease holds.
pub(super) const INSTANCE: &str = "keygen";

#[derive(Debug, Default, Deserialize)]
pub(super) struct NewMachine {
    data: Option<NewMachineData>,
}

#[derive(Debug, Default, Deserialize)]
struct NewMachineData {
    #[serde(default)]
    attributes: NewMachineAttributes,
    #[serde(default)]
    relationships: Relationships,
}

#[derive(Debug, Default, Deserialize)]
struct NewMachineAttributes {
    fingerprint: Option<String>,
    name: Option<String>,
    hostname: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Relationships {
    license: Option<Related>,
}

#[derive(Debug, Default, Deserialize)]
struct Related {
    data: Option<RelatedId>,
}

#[derive(Debug, Default, Deserialize)]
struct RelatedId {
    id: String,
}

/// `POST /v1/machines`: activates a machine (201), or 422 `FINGERPRINT_TAKEN` when it
/// holds a seat already, or `MACHINE_LIMIT_EXCEEDED` when the seats are taken.
#[utoipa::path(post, path = "/keygen/v1/machines", tag = "keygen",
    responses(KeygenRefusals,
        (status = 201, description = "The machine: an activation, or a lease on a floating license", content_type = "application/vnd.api+json"),
        (status = 422, description = "`MACHINE_LIMIT_EXCEEDED`, `FINGERPRINT_TAKEN`, `RELEASE_COOLDOWN`", content_type = "application/vnd.api+json")))]
pub(super) async fn activate(
    State(state): State<AppState>,
    headers: HeaderMap,
    slug: Option<Extension<Slug>>,
    body: Bytes,
) -> Response {
    with_licensee!(state, headers, slug, |licensee| {
        let body: NewMachine = body_or_default(&body)?;
        let data = body.data.unwrap_or_default();
        let license_id = data
            .relationships
            .license
            .and_then(|r| r.data)
            .map(|d| d.id)
            .ok_or_else(|| {
                KgError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "LICENSE_BLANK",
                    "must exist",
                )
                .at("/data/relationships/license")
            })?;
        if license_id != licensee.license().id {
            return Err(KgError::new(
                StatusCode::FORBIDDEN,
                "ACCESS_DENIED",
                "You do not have permission to complete the request (the license is not the one authenticated)",
            ));
        }
        let attributes = data.attributes;
        let fingerprint = match attributes.fingerprint.as_deref().map(str::trim) {
            None | Some("") => {
                return Err(KgError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "FINGERPRINT_BLANK",
                    "can't be blank",
                )
                .at("/data/attributes/fingerprint"))
            }
            Some(fingerprint) => text("fingerprint", fingerprint)?,
        };
        let identifier = match optional("name", attributes.name.as_deref())? {
            Some(name) => Some(name),
            None => optional("hostname", attributes.hostname.as_deref())?,
        };
        let caller = &licensee.caller;
        let taken: ApiResult<(Seat, bool)> = async {
            caller.require_in_force()?;
            match caller.license.seat_model {
                SeatModel::Dedicated => Ok(state
                    .store
                    .activate(&caller.license, &fingerprint, identifier.as_deref())
                    .await?),
                SeatModel::Concurrent => {
                    let holder = LeaseHolder {
                        fingerprint: fingerprint.clone(),
                        os_user: String::new(),
                        identifier: identifier.clone(),
                        instance: INSTANCE.into(),
                        queue: false,
                    };
                    Ok(state.store.take_lease(&caller.license, &holder).await?)
                }
            }
        }
        .await;
        publish_refusal(&state, caller, &taken);
        let (seat, created) = taken?;
        if !created {
            return Err(KgError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "FINGERPRINT_TAKEN",
                "has already been taken",
            )
            .at("/data/attributes/fingerprint"));
        }
        caller.publish(
            &state,
            match seat.kind {
                SeatKind::Activation => "seat.activated",
                _ => "seat.taken",
            },
        );
        Ok(doc::document(
            StatusCode::CREATED,
            &serde_json::json!({ "data": doc::machine(&seat, licensee.license()) }),
        ))
    })
}

/// The machine `id` names (its id or its fingerprint), or 404.
pub(super) async fn find(state: &AppState, licensee: &Licensee, id: &str) -> KgResult<Seat> {
    state
        .store
        .machine_seat(&licensee.license().id, id)
        .await?
        .ok_or_else(|| KgError::not_found("machine", id))
}

/// `GET /v1/machines/{id}`: the machine, by id or fingerprint.
#[utoipa::path(get, path = "/keygen/v1/machines/{id}", tag = "keygen",
    params(("id" = String, Path, description = "The machine's id or fingerprint")),
    responses(KeygenRefusals,
        (status = 200, description = "The machine", content_type = "application/vnd.api+json"),
        (status = 404, description = "No such machine", content_type = "application/vnd.api+json")))]
pub(super) async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    slug: Option<Extension<Slug>>,
    Path(id): Path<String>,
) -> Response {
    with_licensee!(state, headers, slug, |licensee| {
        let seat = find(&state, &licensee, &id).await?;
        Ok(doc::document(
            StatusCode::OK,
            &serde_json::json!({ "data": doc::machine(&seat, licensee.license()) }),
        ))
    })
}

/// The instance a facade call speaks for on a lease: `keygen`, or the lease's first
/// when it was taken through the client protocol (a native lease pinged or deleted here).
pub(super) fn instance_of(seat: &Seat) -> String {
    let instances = Instances::from_stored(seat.instances.as_deref());
    if instances.contains(INSTANCE) {
        return INSTANCE.into();
    }
    instances
        .as_slice()
        .first()
        .cloned()
        .unwrap_or_else(|| INSTANCE.to_string())
}

/// `DELETE /v1/machines/{id}` (204): deactivates the machine (within the monthly
/// release limit, else 422 `DEACTIVATIONS_LIMIT_EXCEEDED`), checks its lease in, or
/// returns its borrow.
#[utoipa::path(delete, path = "/keygen/v1/machines/{id}", tag = "keygen",
    params(("id" = String, Path, description = "The machine's id or fingerprint")),
    responses(KeygenRefusals,
        (status = 204, description = "Deactivated, checked in, or its borrow returned"),
        (status = 404, description = "No such machine", content_type = "application/vnd.api+json"),
        (status = 422, description = "`DEACTIVATIONS_LIMIT_EXCEEDED`: the month's releases are used up", content_type = "application/vnd.api+json")))]
pub(super) async fn deactivate(
    State(state): State<AppState>,
    headers: HeaderMap,
    slug: Option<Extension<Slug>>,
    Path(id): Path<String>,
) -> Response {
    with_licensee!(state, headers, slug, |licensee| {
        let seat = find(&state, &licensee, &id).await?;
        let caller = &licensee.caller;
        let license = &caller.license;
        let fingerprint = seat.fingerprint.clone().unwrap_or_default();
        let kind = match seat.kind {
            SeatKind::Activation => {
                state.store.deactivate(license, &fingerprint).await?;
                "seat.released"
            }
            SeatKind::Borrow => {
                state
                    .store
                    .return_borrow(license, &seat.id, &fingerprint)
                    .await?;
                "seat.returned"
            }
            _ => {
                // Every instance leaves: the machine is gone.
                let mut released = false;
                for instance in Instances::from_stored(seat.instances.as_deref()).as_slice() {
                    match state
                        .store
                        .release_instance(license, &seat.id, instance)
                        .await
                    {
                        Ok(freed) => released |= freed,
                        Err(StoreError::NotFound) => {}
                        Err(error) => return Err(error.into()),
                    }
                }
                if released {
                    "seat.released"
                } else {
                    "seat.instance_exited"
                }
            }
        };
        caller.publish(&state, kind);
        Ok(StatusCode::NO_CONTENT.into_response())
    })
}

/// `POST /v1/machines/{id}/actions/ping`: a lease's heartbeat (422
/// `MACHINE_HEARTBEAT_DEAD` once it lapsed); on an activation or a borrow, nothing to
/// renew: the machine answers alive.
#[utoipa::path(post, path = "/keygen/v1/machines/{id}/actions/ping", tag = "keygen",
    params(("id" = String, Path, description = "The machine's id or fingerprint")),
    responses(KeygenRefusals,
        (status = 200, description = "The machine, alive", content_type = "application/vnd.api+json"),
        (status = 404, description = "No such machine", content_type = "application/vnd.api+json"),
        (status = 422, description = "`MACHINE_HEARTBEAT_DEAD`", content_type = "application/vnd.api+json")))]
pub(super) async fn ping(
    State(state): State<AppState>,
    headers: HeaderMap,
    slug: Option<Extension<Slug>>,
    Path(id): Path<String>,
) -> Response {
    with_licensee!(state, headers, slug, |licensee| {
        let mut seat = find(&state, &licensee, &id).await?;
        let caller = &licensee.caller;
        if seat.kind != SeatKind::Activation {
            let beat = state
                .heartbeat(&caller.license, &seat.id, &instance_of(&seat), None)
                .await;
            match beat {
                Ok(beaten) => {
                    caller.publish(&state, beaten.kind());
                    let now = chrono::Utc::now().timestamp_millis();
                    if seat.kind == SeatKind::Lease {
                        seat.expires_at = Some(beaten.expires_at);
                    }
                    seat.last_seen_at = Some(now);
                }
                Err(StoreError::LeaseEnded(_)) => {
                    caller.publish(&state, "seat.expired");
                    return Err(KgError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "MACHINE_HEARTBEAT_DEAD",
                        "is dead",
                    ));
                }
                Err(error) => return Err(error.into()),
            }
        }
        Ok(doc::document(
            StatusCode::OK,
            &serde_json::json!({ "data": doc::machine(&seat, licensee.license()) }),
        ))
    })
}
