//! The client protocol (DESIGN §3): what licensed applications call. The license key
//! authenticates the caller (in the body as `key`, or `Authorization: License <key>`);
//! every answer is signed by the key's workspace (Ed25519, `Leasehold-Signature`).

use crate::binding::{self, Echo, Op};
use crate::error::{ApiError, ApiResult};
use crate::license_cache::Need;
use crate::secrets::constant_time_eq;
use crate::signing::{Repeats, Signer};
use crate::AppState;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use files::*;
use leasehold_core::{effective_status, keys, SeatModel};
use leasehold_proto::*;
use leasehold_store::{today, License};
use seats::*;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;

/// The client protocol's part of `/openapi.json` (the routes themselves are served by
/// [`routes`], each behind its signing layer).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(seats::validate, seats::activate, seats::deactivate, seats::take_lease, seats::leave_queue, seats::heartbeat,
        seats::release_instance, borrows::borrow, borrows::return_borrow, files::license_file, files::public_key),
    components(schemas(Binding)),
    tags((name = "client", description = "The client protocol licensed applications call. Every answer, \
        errors included, is signed (`Leasehold-Signature: ed25519=…` over `leasehold-answer-v1\\n` + body) \
        and carries the `Binding` fields (`nonce`, `op`, `fingerprint`, `os_user`, `at`) at the top level \
        of its JSON body"))
)]
pub(crate) struct ClientDoc;

/// The refusals every keyed client route can answer, for `/openapi.json` (each route lists
/// its own besides). Documentation only: the answers themselves are `ApiError`s.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
enum KeyedRefusals {
    #[response(
        status = 400,
        description = "A field is invalid (`INVALID_REQUEST`), or the nonce"
    )]
    Invalid(ErrorBody),
    #[response(status = 401, description = "No license key")]
    NoKey(ErrorBody),
    #[response(
        status = 429,
        description = "This address or key is past its rate limit (`RATE_LIMITED`)"
    )]
    Limited(ErrorBody),
}

/// The longest an offline license file may be valid (policy values are capped too).
pub(crate) const MAX_FILE_TTL_S: i64 = 10 * 366 * 24 * 3600;

pub fn routes(state: AppState) -> Router<AppState> {
    // Each route names what it is asked (its answers echo it) and is signed by one
    // middleware, which also refuses an address past its rate limit: one, not two, as
    // each boxes its future (about 1 KiB) on every request.
    let signed = |op: Op| middleware::from_fn_with_state((state.clone(), op), limit_then_sign);
    Router::new()
        .route(
            "/v1/client/validate",
            post(validate).layer(signed(Op::Validate)),
        )
        .route(
            "/v1/client/activations",
            post(activate).layer(signed(Op::Activate)),
        )
        .route(
            "/v1/client/activations/{fingerprint}",
            delete(deactivate).layer(signed(Op::Deactivate)),
        )
        .route(
            "/v1/client/leases",
            post(take_lease).layer(signed(Op::Lease)),
        )
        .route(
            "/v1/client/leases/{id}/heartbeat",
            post(heartbeat).layer(signed(Op::Heartbeat)),
        )
        .route(
            "/v1/client/leases/{id}/instances/{instance}",
            delete(release_instance).layer(signed(Op::Checkin)),
        )
        .route(
            "/v1/client/queue/leave",
            post(leave_queue).layer(signed(Op::LeaveQueue)),
        )
        .route(
            "/v1/client/borrows",
            post(borrows::borrow).layer(signed(Op::Borrow)),
        )
        .route(
            "/v1/client/borrows/{id}",
            delete(borrows::return_borrow).layer(signed(Op::ReturnBorrow)),
        )
        .route(
            "/v1/client/license-file",
            get(license_file).layer(signed(Op::LicenseFile)),
        )
        .route(
            "/v1/public-key",
            get(public_key).layer(middleware::from_fn_with_state(state, limit_by_ip)),
        )
}

/// The key that signs an answer, when it belongs to a workspace.
#[derive(Clone)]
pub(crate) struct SignWith(pub(crate) Arc<Signer>);

/// Refuses a malformed nonce header or a client address past its rate limit, else
/// answers the request; either way binds the answer to the request and signs it.
async fn limit_then_sign(
    State((state, op)): State<(AppState, Op)>,
    request: Request,
    next: Next,
) -> Response {
    let (header_nonce, response) = match binding::header_nonce(request.headers()) {
        Err(refused) => (None, refused.into_response()),
        Ok(nonce) => match refused_by_ip(&state, &request) {
            Some(refused) => (nonce, refused),
            None => (nonce, next.run(request).await),
        },
    };
    sign_answer(&state, op, header_nonce, response).await
}

/// Binds an answer to its request (DESIGN §11) and signs its exact body bytes: with the
/// workspace's key when the handler resolved one, with the server's key otherwise
/// (unknown key, malformed request).
async fn sign_answer(
    state: &AppState,
    op: Op,
    header_nonce: Option<String>,
    mut response: Response,
) -> Response {
    let key = response
        .extensions()
        .get::<SignWith>()
        .map(|s| s.0.clone())
        .unwrap_or_else(|| state.signers.server());
    let echo = response
        .extensions_mut()
        .remove::<Echo>()
        .unwrap_or_default();
    let binding = binding::binding(op, echo, header_nonce);
    // A nonce makes the body unique: not worth remembering its signature.
    let repeats = match binding.nonce {
        Some(_) => Repeats::Seldom,
        None => response
            .extensions()
            .get::<Repeats>()
            .copied()
            .unwrap_or_default(),
    };
    let (mut parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, 1 << 20).await {
        Ok(bytes) => bytes,
        Err(_) => return ApiError::internal().into_response(),
    };
    let bytes = match binding::bind(&bytes, &binding) {
        Some(bound) => Bytes::from(bound),
        None => bytes,
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    if let Some(value) = key.header(&bytes, repeats) {
        parts.headers.insert(SIGNATURE_HEADER, value);
    }
    Response::from_parts(parts, Body::from(bytes))
}

async fn limit_by_ip(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match refused_by_ip(&state, &request) {
        Some(refused) => refused,
        None => next.run(request).await,
    }
}

/// The refusal of a client address past its rate limit.
fn refused_by_ip(state: &AppState, request: &Request) -> Option<Response> {
    ip_refusal(state, request).map(IntoResponse::into_response)
}

/// Why a client address past its rate limit is refused (`RATE_LIMITED`), if it is.
pub(crate) fn ip_refusal(state: &AppState, request: &Request) -> Option<ApiError> {
    let ConnectInfo(address) = request.extensions().get::<ConnectInfo<SocketAddr>>()?;
    let ip = state.client_ip(address.ip(), request.headers());
    state.limits.check_ip(ip).err()
}

/// An activation's answer: [`Activation`] without its `fingerprint`, which the answer's
/// binding carries at the same place (DESIGN §11; one key, written once).
#[derive(Serialize)]
struct ActivationAnswer {
    id: String,
    identifier: Option<String>,
    activated_at: chrono::DateTime<chrono::Utc>,
}

/// The caller, once its key resolved to a live license.
pub(crate) struct Caller {
    /// Shared with the license cache, not copied per call.
    pub(crate) license: Arc<License>,
    pub(crate) signer: Arc<Signer>,
}

impl Caller {
    /// Finds the license of the key in the body or the `Authorization: License` header.
    /// `Ok(None)` for a key that matches no license.
    /// `need`: what of the license the answer shows, and so must be current.
    pub(crate) async fn resolve(
        state: &AppState,
        headers: &HeaderMap,
        body_key: Option<&str>,
        need: Need,
    ) -> ApiResult<Option<Caller>> {
        let key = body_key
            .or_else(|| license_header(headers))
            .map(str::to_string)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "UNAUTHORIZED",
                    "a license key is required (\"key\" in the body or Authorization: License …)",
                )
            })?;
        let key = keys::normalize_key(&key).map_err(|m| ApiError::invalid("key", m))?;
        let key_hash = state.master.key_hash(&key);
        state.limits.check_key(&key_hash)?;
        // Found by keyed hash (in the cache, or else in the store) and confirmed in
        // constant time.
        let cache = &state.live.licenses;
        let found = match cache.get(&key_hash, need) {
            Some(license) => Some(license),
            None => {
                let ticket = cache.ticket();
                let found = state
                    .store
                    .license_by_key_hash(&key_hash)
                    .await?
                    .map(Arc::new);
                if let Some(license) = &found {
                    cache.put(&key_hash, license.clone(), ticket);
                }
                found
            }
        };
        let license = match found {
            Some(license) if constant_time_eq(license.key_hash.as_bytes(), key_hash.as_bytes()) => {
                license
            }
            _ => return Ok(None),
        };
        let signer = state
            .signers
            .workspace(state.store.as_ref(), &license.workspace_id)
            .await?;
        Ok(Some(Caller { license, signer }))
    }

    /// Like `resolve`, but an unknown key is 404 `NOT_FOUND`.
    async fn require(
        state: &AppState,
        headers: &HeaderMap,
        body_key: Option<&str>,
        need: Need,
    ) -> ApiResult<Caller> {
        Self::resolve(state, headers, body_key, need)
            .await?
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "NOT_FOUND",
                    "no license has this key",
                )
            })
    }

    /// The answer, signed by this caller's workspace.
    fn reply<T: Serialize>(&self, result: ApiResult<(StatusCode, T)>) -> Response {
        let mut response = match result {
            Ok((status, body)) => (status, Json(body)).into_response(),
            Err(error) => error.into_response(),
        };
        response
            .extensions_mut()
            .insert(SignWith(self.signer.clone()));
        response
    }

    pub(crate) fn publish(&self, state: &AppState, kind: &str) {
        state
            .live
            .publish(&self.license.workspace_id, &self.license.id, kind);
    }

    /// Refuses seats on a license that is not in force today.
    pub(crate) fn require_in_force(&self) -> ApiResult<()> {
        let standing = effective_status(self.license.status, self.license.expires_on, today());
        match standing.refusal() {
            None => Ok(()),
            Some((code, message)) => Err(ApiError::new(StatusCode::FORBIDDEN, code, message)),
        }
    }

    fn require_model(&self, model: SeatModel) -> ApiResult<()> {
        if self.license.seat_model == model {
            return Ok(());
        }
        let message = match model {
            SeatModel::Dedicated => "this license's seats are concurrent: take a lease (POST /v1/client/leases)",
            SeatModel::Concurrent => "this license's seats are dedicated: activate the machine (POST /v1/client/activations)",
        };
        Err(ApiError::new(StatusCode::CONFLICT, "CONFLICT", message))
    }
}

/// The key of an `Authorization: License <key>` header.
pub(crate) fn license_header(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("License "))
        .map(str::trim)
}

/// The workspace of a license key, for signing an answer that resolved no caller (a
/// refusal before it, such as a rate limit): from the license cache or the store, without
/// counting against the key's rate limit. `None` for a key no license has.
pub(crate) async fn workspace_of_key(state: &AppState, key: &str) -> Option<String> {
    let key = keys::normalize_key(key).ok()?;
    let key_hash = state.master.key_hash(&key);
    if let Some(license) = state.live.licenses.get(&key_hash, Need::Settings) {
        return Some(license.workspace_id.clone());
    }
    let license = state.store.license_by_key_hash(&key_hash).await.ok()??;
    constant_time_eq(license.key_hash.as_bytes(), key_hash.as_bytes())
        .then_some(license.workspace_id)
}

/// Runs `f` for a resolved caller and answers what it gives, echoing `echo` of the
/// request (a malformed nonce is refused before anything is done).
macro_rules! answer {
    ($state:expr, $headers:expr, $key:expr, $need:expr, $echo:expr, |$caller:ident| $body:expr) => {{
        let echo: Echo = $echo;
        let response = match echo.check() {
            Err(error) => error.into_response(),
            Ok(()) => match Caller::require(&$state, &$headers, $key, $need).await {
                Ok($caller) => {
                    let result = async { $body }.await;
                    publish_refusal(&$state, &$caller, &result);
                    $caller.reply(result)
                }
                Err(error) => error.into_response(),
            },
        };
        echoing(response, echo)
    }};
}

/// The answer, with what it echoes of its request for the signing middleware.
fn echoing(mut response: Response, echo: Echo) -> Response {
    response.extensions_mut().insert(echo);
    response
}

/// Refusals that may have released lapsed leases on the way (a full license sweeps its
/// own before refusing; a lapsed heartbeat ends its lease) still change what the live
/// view shows.
/// A waiter's refusal changed the queue the live view shows (`seat.queued`; a long poll
/// wakes for neither, so waiters do not wake each other).
pub(crate) fn publish_refusal<T>(state: &AppState, caller: &Caller, result: &ApiResult<T>) {
    if let Err(error) = result {
        crate::metrics::denied(error.code);
        let queued = error
            .details
            .as_ref()
            .is_some_and(|details| details.get("queue_position").is_some());
        if queued {
            caller.publish(state, "seat.queued");
        } else if matches!(error.code, "NO_SEATS" | "LEASE_EXPIRED") {
            caller.publish(state, "seat.expired");
        }
    }
}

fn client_license(l: &License) -> ClientLicense {
    ClientLicense {
        id: l.id.clone(),
        license_type: l.license_type,
        status: l.status,
        seat_model: l.seat_model,
        seats_total: l.seats_total,
        seats_used: l.seats_used,
        expires_on: l.expires_on,
        maintenance_expires_on: l.maintenance_expires_on,
        version: l.version.clone(),
        licensed_to: l.licensed_to.clone(),
        lease_ttl_s: l.lease_ttl_s,
        heartbeat_interval_s: l.policy().heartbeat_every_s(),
    }
}

/// The longest machine, user, identifier or instance name a client may send (DESIGN §11).
const MAX_CLIENT_TEXT: usize = 256;

/// A name a client sends (fingerprint, os_user, identifier, instance): trimmed, not
/// empty, at most 256 characters, without control or bidirectional-override characters
/// (which could make one machine's name read as another's in the console).
pub(crate) fn text(field: &str, value: &str) -> ApiResult<String> {
    let value = crate::service::required_text(field, value, MAX_CLIENT_TEXT)?;
    if value.chars().any(|c| c.is_control() || is_bidi_control(c)) {
        return Err(ApiError::invalid(
            field,
            "must not contain control or bidirectional-override characters",
        ));
    }
    Ok(value)
}

pub(crate) fn optional(field: &str, value: Option<&str>) -> ApiResult<Option<String>> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(value) => text(field, value).map(Some),
    }
}

/// Characters that reorder the text around them (Unicode's explicit directional
/// embeddings, overrides and isolates, and the marks).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

// The handlers, after the `answer!` macro they use.
mod borrows;
pub(crate) mod files;
pub(crate) mod seats;
