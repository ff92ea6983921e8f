//! Borrowed floating seats (DESIGN §7): a seat lent for days of offline use, with the
//! offline license file that vouches for it to its end, and its early return.

use super::*;
use crate::binding::Echo;
use crate::convert;
use crate::extract::{ApiJson, ApiQuery};
use axum::extract::Path;
use leasehold_store::LeaseHolder;
use serde::Deserialize;

/// Lends this machine and OS user a floating seat for `days` days without heartbeats:
/// a new seat, its live lease turned into a borrow, or its borrow renewed from now.
#[utoipa::path(post, path = "/v1/client/borrows", tag = "client", request_body = BorrowRequest,
    responses(KeyedRefusals,
        (status = 201, body = Borrowed, description = "A seat lent: a new one, or the holder's lease turned into a borrow"),
        (status = 200, body = Borrowed, description = "The holder's borrow renewed, counted from now"),
        (status = 400, description = "`INVALID_REQUEST`: `days` outside 1 to the policy's `max_borrow_days`", body = ErrorBody),
        (status = 403, description = "`BORROW_NOT_ALLOWED`, or the license is not in force", body = ErrorBody),
        (status = 404, description = "No license has this key", body = ErrorBody),
        (status = 409, description = "`NO_SEATS`, `BORROW_LIMIT` or `RELEASE_COOLDOWN`", body = ErrorBody)))]
pub(super) async fn borrow(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<BorrowRequest>,
) -> Response {
    answer!(
        state,
        headers,
        body.key.as_deref(),
        Need::SeatCount,
        Echo::new(
            body.nonce.as_deref(),
            Some(&body.fingerprint),
            Some(&body.os_user)
        ),
        |caller| {
            caller.require_in_force()?;
            caller.require_model(SeatModel::Concurrent)?;
            let holder = LeaseHolder {
                fingerprint: text("fingerprint", &body.fingerprint)?,
                os_user: text("os_user", &body.os_user)?,
                identifier: optional("identifier", body.identifier.as_deref())?,
                instance: String::new(),
                queue: false,
            };
            let (seat, created) = state
                .store
                .borrow(&caller.license, &holder, body.days)
                .await?;
            caller.publish(&state, "seat.borrowed");
            let borrowed_until = convert::time(seat.expires_at.unwrap_or(seat.created_at));
            let payload = LicenseFilePayload {
                license: client_license(&caller.license),
                fingerprint: holder.fingerprint,
                issued_at: chrono::Utc::now(),
                valid_until: within_license(&caller.license, borrowed_until),
                kind: Some("borrow".into()),
                borrow_id: Some(seat.id.clone()),
                os_user: Some(holder.os_user),
            };
            let status = match created {
                true => StatusCode::CREATED,
                false => StatusCode::OK,
            };
            Ok((
                status,
                Borrowed {
                    id: seat.id,
                    borrowed_until,
                    license_file: signed_file(&caller, &payload)?,
                },
            ))
        }
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReturnQuery {
    key: Option<String>,
    fingerprint: String,
    nonce: Option<String>,
}

/// Returns a borrow before its end (reason `returned`): its seat is free at once.
#[utoipa::path(delete, path = "/v1/client/borrows/{id}", tag = "client",
    params(("id" = String, Path), ("fingerprint" = String, Query, description = "The machine it was lent to"),
        ("key" = Option<String>, Query, description = "Or `Authorization: License …`"),
        ("nonce" = Option<String>, Query, description = "Or the `Leasehold-Nonce` header")),
    responses(KeyedRefusals,
        (status = 200, body = BorrowReturned),
        (status = 404, description = "No license has this key, or no such borrow of this machine", body = ErrorBody)))]
pub(super) async fn return_borrow(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<ReturnQuery>,
) -> Response {
    answer!(
        state,
        headers,
        query.key.as_deref(),
        Need::Settings,
        Echo::new(query.nonce.as_deref(), Some(&query.fingerprint), None),
        |caller| {
            let fingerprint = text("fingerprint", &query.fingerprint)?;
            let seat = state
                .store
                .return_borrow(&caller.license, &id, &fingerprint)
                .await?;
            caller.publish(&state, "seat.returned");
            Ok((
                StatusCode::OK,
                BorrowReturned {
                    id: seat.id,
                    returned_at: convert::time(seat.released_at.unwrap_or(seat.created_at)),
                },
            ))
        }
    )
}
