//! The client protocol (DESIGN §3): what licensed applications call. The license key
//! authenticates the caller (in the body as `key`, or `Authorization: License <key>`);
//! every answer is signed by the key's workspace (Ed25519, `Leasehold-Signature`).

use crate::binding::{self, Echo, Op};
use crate::error::{ApiError, ApiResult};
use crate::extract::{parse_json, ApiJson, ApiQuery};
use crate::license_cache::Need;
use crate::secrets::constant_time_eq;
use crate::signing::{Repeats, Signer};
use crate::{convert, AppState};
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use chrono::SubsecRound;
use leasehold_core::{effective_status, keys, SeatKind, SeatModel};
use leasehold_proto::*;
use leasehold_store::{today, LeaseHolder, License};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;

/// The client protocol's part of `/openapi.json` (the routes themselves are served by
/// [`routes`], each behind its signing layer).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(validate, activate, deactivate, take_lease, heartbeat, release_instance, license_file, public_key),
    components(schemas(Binding)),
    tags((name = "client", description = "The client protocol licensed applications call. Every answer, \
        errors included, is signed (`Leasehold-Signature: ed25519=…` over `leasehold-answer-v1\\n` + body) \
        and carries the `Binding` fields (`nonce`, `op`, `fingerprint`, `os_user`, `at`) at the top level \
        of its JSON body"))
)]
pub(crate) struct ClientDoc;

/// The longest an offline license file may be valid (policy values are capped too).
const MAX_FILE_TTL_S: i64 = 10 * 366 * 24 * 3600;

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
struct SignWith(Arc<Signer>);

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
    let ConnectInfo(address) = request.extensions().get::<ConnectInfo<SocketAddr>>()?;
    let ip = state.client_ip(address.ip(), request.headers());
    state
        .limits
        .check_ip(ip)
        .err()
        .map(IntoResponse::into_response)
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
struct Caller {
    /// Shared with the license cache, not copied per call.
    license: Arc<License>,
    signer: Arc<Signer>,
}

impl Caller {
    /// Finds the license of the key in the body or the `Authorization: License` header.
    /// `Ok(None)` for a key that matches no license.
    /// `need`: what of the license the answer shows, and so must be current.
    async fn resolve(
        state: &AppState,
        headers: &HeaderMap,
        body_key: Option<&str>,
        need: Need,
    ) -> ApiResult<Option<Caller>> {
        let key = body_key
            .map(str::to_string)
            .or_else(|| {
                headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("License "))
                    .map(str::to_string)
            })
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

    fn publish(&self, state: &AppState, kind: &str) {
        state
            .live
            .publish(&self.license.workspace_id, &self.license.id, kind);
    }

    /// Refuses seats on a license that is not in force today.
    fn require_in_force(&self) -> ApiResult<()> {
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
fn publish_refusal<T>(state: &AppState, caller: &Caller, result: &ApiResult<T>) {
    if let Err(error) = result {
        if matches!(error.code, "NO_SEATS" | "LEASE_EXPIRED") {
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
fn text(field: &str, value: &str) -> ApiResult<String> {
    let value = crate::service::required_text(field, value, MAX_CLIENT_TEXT)?;
    if value.chars().any(|c| c.is_control() || is_bidi_control(c)) {
        return Err(ApiError::invalid(
            field,
            "must not contain control or bidirectional-override characters",
        ));
    }
    Ok(value)
}

fn optional(field: &str, value: Option<&str>) -> ApiResult<Option<String>> {
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

/// Checks a license key (and, for a dedicated license, that this machine holds a seat).
/// The answer is signed and bound to the request (see `Binding`).
#[utoipa::path(post, path = "/v1/client/validate", tag = "client", request_body = ValidateRequest,
    responses((status = 200, body = ValidateAnswer, description = "Signed; an unknown key is `NOT_FOUND` with `license: null`"),
        (status = 400, description = "A field is invalid (`INVALID_REQUEST`), or the nonce", body = ErrorBody),
        (status = 401, description = "No license key", body = ErrorBody),
        (status = 429, description = "This address or key is past its rate limit (`RATE_LIMITED`)", body = ErrorBody)))]
async fn validate(
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
async fn validation(state: AppState, headers: HeaderMap, body: ValidateRequest) -> Response {
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
    responses((status = 201, body = Activation, description = "A new seat"),
        (status = 200, body = Activation, description = "This machine holds a seat already"),
        (status = 400, description = "A field is invalid (`INVALID_REQUEST`), or the nonce", body = ErrorBody),
        (status = 401, description = "No license key", body = ErrorBody),
        (status = 429, description = "This address or key is past its rate limit (`RATE_LIMITED`)", body = ErrorBody),
        (status = 403, description = "The license is not in force (`SUSPENDED`, `REVOKED`, `EXPIRED`)", body = ErrorBody),
        (status = 404, description = "No license has this key", body = ErrorBody),
        (status = 409, description = "`NO_SEATS`, or `RELEASE_COOLDOWN` after an admin released this machine", body = ErrorBody)))]
async fn activate(
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
fn optional_body<T: serde::de::DeserializeOwned + Default>(bytes: &Bytes) -> ApiResult<T> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        parse_json(bytes)
    }
}

/// Frees this machine's dedicated seat, to move the license.
#[utoipa::path(delete, path = "/v1/client/activations/{fingerprint}", tag = "client", request_body = KeyOnly,
    params(("fingerprint" = String, Path)),
    responses((status = 200, body = Deactivated),
        (status = 400, description = "A field is invalid (`INVALID_REQUEST`), or the nonce", body = ErrorBody),
        (status = 401, description = "No license key", body = ErrorBody),
        (status = 429, description = "This address or key is past its rate limit (`RATE_LIMITED`)", body = ErrorBody),
        (status = 404, description = "No license has this key, or the machine holds no seat", body = ErrorBody),
        (status = 429, description = "`RELEASE_LIMIT`: the month's self-service releases are used up", body = ErrorBody)))]
async fn deactivate(
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
    responses((status = 201, body = Lease, description = "A new lease"),
        (status = 200, body = Lease, description = "Joined the holder's lease"),
        (status = 400, description = "A field is invalid (`INVALID_REQUEST`), or the nonce", body = ErrorBody),
        (status = 401, description = "No license key", body = ErrorBody),
        (status = 429, description = "This address or key is past its rate limit (`RATE_LIMITED`)", body = ErrorBody),
        (status = 403, description = "The license is not in force", body = ErrorBody),
        (status = 404, description = "No license has this key", body = ErrorBody),
        (status = 409, description = "`NO_SEATS` (with `retry_after_s`), `RELEASE_COOLDOWN` or `INSTANCE_LIMIT`", body = ErrorBody)))]
async fn take_lease(
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
            let holder = LeaseHolder {
                fingerprint: text("fingerprint", &body.fingerprint)?,
                os_user: text("os_user", &body.os_user)?,
                identifier: optional("identifier", body.identifier.as_deref())?,
                instance: text("instance", &body.instance)?,
            };
            let (seat, created) = state.store.take_lease(&caller.license, &holder).await?;
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

/// Keeps a lease alive: pushes its expiry by the license's lease period.
#[utoipa::path(post, path = "/v1/client/leases/{id}/heartbeat", tag = "client", request_body = HeartbeatRequest,
    params(("id" = String, Path)),
    responses((status = 200, body = HeartbeatAnswer),
        (status = 400, description = "A field is invalid (`INVALID_REQUEST`), or the nonce", body = ErrorBody),
        (status = 401, description = "No license key", body = ErrorBody),
        (status = 429, description = "This address or key is past its rate limit (`RATE_LIMITED`)", body = ErrorBody),
        (status = 404, description = "No license has this key", body = ErrorBody),
        (status = 409, description = "`INSTANCE_LIMIT`: a new instance would pass the policy's limit", body = ErrorBody),
        (status = 410, description = "`LEASE_EXPIRED`: take a new lease", body = ErrorBody)))]
async fn heartbeat(
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
            let expires_at = state
                .store
                .heartbeat(&caller.license, &id, &instance)
                .await?;
            caller.publish(&state, "seat.heartbeat");
            Ok((
                StatusCode::OK,
                HeartbeatAnswer {
                    expires_at: convert::time(expires_at),
                },
            ))
        }
    )
}

/// One instance exits; the seat is freed with the lease's last instance.
#[utoipa::path(delete, path = "/v1/client/leases/{id}/instances/{instance}", tag = "client", request_body = KeyOnly,
    params(("id" = String, Path), ("instance" = String, Path)),
    responses((status = 200, body = InstanceReleased),
        (status = 400, description = "A field is invalid (`INVALID_REQUEST`), or the nonce", body = ErrorBody),
        (status = 401, description = "No license key", body = ErrorBody),
        (status = 429, description = "This address or key is past its rate limit (`RATE_LIMITED`)", body = ErrorBody),
        (status = 404, description = "No license has this key, or no such lease", body = ErrorBody)))]
async fn release_instance(
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LicenseFileQuery {
    key: Option<String>,
    fingerprint: String,
    nonce: Option<String>,
}

/// A signed offline license file for a machine that holds a seat (on a concurrent
/// license, valid no longer than its lease).
#[utoipa::path(get, path = "/v1/client/license-file", tag = "client",
    params(("fingerprint" = String, Query), ("key" = Option<String>, Query, description = "Or `Authorization: License …`"),
        ("nonce" = Option<String>, Query, description = "Or the `Leasehold-Nonce` header")),
    responses((status = 200, body = LicenseFile),
        (status = 400, description = "A field is invalid (`INVALID_REQUEST`), or the nonce", body = ErrorBody),
        (status = 401, description = "No license key", body = ErrorBody),
        (status = 429, description = "This address or key is past its rate limit (`RATE_LIMITED`)", body = ErrorBody),
        (status = 403, description = "The license is not in force", body = ErrorBody),
        (status = 404, description = "No license has this key", body = ErrorBody),
        (status = 409, description = "`NOT_ACTIVATED`: this machine holds no seat", body = ErrorBody)))]
async fn license_file(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<LicenseFileQuery>,
) -> Response {
    answer!(
        state,
        headers,
        query.key.as_deref(),
        Need::SeatCount,
        Echo::new(query.nonce.as_deref(), Some(&query.fingerprint), None),
        |caller| {
            caller.require_in_force()?;
            let fingerprint = text("fingerprint", &query.fingerprint)?;
            let license = &caller.license;
            // A file vouches for a seat this machine holds: its activation, or its live
            // lease, and then only as long as the lease (DESIGN §11: a file may not keep a
            // floating seat once it is checked in; borrowing is the way offline).
            let kind = match license.seat_model {
                SeatModel::Dedicated => SeatKind::Activation,
                SeatModel::Concurrent => SeatKind::Lease,
            };
            let issued_at = chrono::Utc::now();
            let held = state
                .store
                .held_seat(&license.id, kind, &fingerprint)
                .await?
                .filter(|seat| {
                    seat.expires_at
                        .is_none_or(|ms| ms > issued_at.timestamp_millis())
                });
            let Some(held) = held else {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "NOT_ACTIVATED",
                    "this machine holds no seat of this license: activate it or take a lease first",
                ));
            };
            let mut valid_until = issued_at
                + chrono::Duration::seconds(license.license_file_ttl_s.min(MAX_FILE_TTL_S));
            if let Some(lease_end) = held
                .expires_at
                .and_then(chrono::DateTime::from_timestamp_millis)
            {
                valid_until = valid_until.min(lease_end);
            }
            // A file never outlives the license itself.
            if let Some(last_day) = license.expires_on.and_then(|d| d.succ_opt()) {
                if let Some(end) = last_day.and_hms_opt(0, 0, 0).map(|t| t.and_utc()) {
                    valid_until = valid_until.min(end);
                }
            }
            let payload = LicenseFilePayload {
                license: client_license(license),
                fingerprint,
                issued_at,
                valid_until,
            };
            let bytes = serde_json::to_vec(&payload).map_err(|_| ApiError::internal())?;
            use base64::Engine;
            let b64 = base64::engine::general_purpose::STANDARD;
            Ok((
                StatusCode::OK,
                LicenseFile {
                    format: LICENSE_FILE_FORMAT.into(),
                    algorithm: "ed25519".into(),
                    payload: b64.encode(&bytes),
                    signature: b64.encode(caller.signer.sign_file(&bytes).to_bytes()),
                },
            ))
        }
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublicKeyQuery {
    key: Option<String>,
}

/// The workspace's signing key, for a license key (`?key=` or `Authorization: License`)
/// or an API token.
#[utoipa::path(get, path = "/v1/public-key", tag = "client",
    params(("key" = Option<String>, Query, description = "Or `Authorization: License …`, or a bearer token")),
    responses((status = 200, body = PublicKey),
        (status = 400, description = "The key is malformed", body = ErrorBody),
        (status = 401, description = "No license key or token", body = ErrorBody),
        (status = 404, description = "No license has this key", body = ErrorBody),
        (status = 429, description = "Past the rate limit (`RATE_LIMITED`)", body = ErrorBody)))]
async fn public_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<PublicKeyQuery>,
) -> ApiResult<Json<PublicKey>> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer "));
    let workspace_id = if bearer && query.key.is_none() {
        crate::extract::Principal::authenticate(&state, &headers, true)
            .await?
            .workspace_id
    } else {
        Caller::require(&state, &headers, query.key.as_deref(), Need::Settings)
            .await?
            .license
            .workspace_id
            .clone()
    };
    let key = state
        .signers
        .workspace(state.store.as_ref(), &workspace_id)
        .await?;
    Ok(Json(PublicKey {
        algorithm: "ed25519".into(),
        public_key: key.public_key_base64(),
    }))
}
