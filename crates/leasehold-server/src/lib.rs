//! The Leasehold server: the admin API over one [`Store`], its start-up checks, and
//! workspace creation (`leasehold init`).

mod api;
mod binding;
mod client;
mod console;
mod convert;
pub mod egress;
pub mod error;
pub mod extract;
pub mod heartbeats;
pub mod http;
pub mod jobs;
pub(crate) mod keygen;
pub mod license_cache;
pub mod limits;
pub mod live;
pub mod metrics;
pub mod notify;
pub mod secrets;
mod service;
mod session;
pub mod setup;
pub mod signing;
mod state;
pub mod tls;

use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use error::ApiError;
use rand::RngCore;
use std::future::Future;
use std::sync::Arc;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

pub use setup::{create_workspace, open_state, Settings};
pub use state::{AppState, Shared};

/// A new API token: `lh_` and 256 random bits.
pub fn new_api_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!(
        "lh_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The OpenAPI document of the admin API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api::routes().1
}

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    let (api, openapi) = api::routes();
    let openapi = Arc::new(openapi);
    api.merge(client::routes(state.clone()))
        .merge(console::routes())
        .nest_service("/keygen", keygen::router(state.clone()))
        .merge(metrics_route(&state))
        .route(
            "/openapi.json",
            get(move || {
                let openapi = openapi.clone();
                async move { Json(openapi.as_ref().clone()) }
            }),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(metrics::track))
        .layer(axum::middleware::from_fn(refuse_nul_in_path))
        .layer(axum::middleware::map_response(no_store_by_default))
        .layer(DefaultBodyLimit::max(extract::BODY_LIMIT))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            http::BODY_TIMEOUT,
        ))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal().into_response()
        }))
        // Spans name the method and path only: a query string can carry a license key.
    .layer(TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<_>| {
        tracing::info_span!("request", method = %request.method(), path = %request.uri().path())
    }))
        .with_state(state)
}

/// `GET /metrics` on the public listener, unless the metrics have their own
/// (`--metrics-listen`).
fn metrics_route(state: &AppState) -> Router<AppState> {
    match state.metrics_listen {
        Some(_) => Router::new(),
        None => Router::new().route("/metrics", get(metrics::page)),
    }
}

/// The router of `--metrics-listen`: `/metrics` alone.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics::page))
        .with_state(state)
}

/// Answers are not cached unless they say so (the console's assets do): many carry a
/// secret shown once (a license key, a token, a webhook secret) or a workspace's data.
async fn no_store_by_default(mut response: Response) -> Response {
    response
        .headers_mut()
        .entry(axum::http::header::CACHE_CONTROL)
        .or_insert(axum::http::HeaderValue::from_static("no-store"));
    response
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!("no route {}", uri.path()),
    )
}

/// No id holds a NUL character, and PostgreSQL refuses one in text: a path with `%00`
/// finds nothing here rather than failing in the database.
async fn refuse_nul_in_path(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // The Keygen facade signs its own refusal of one.
    let path = request.uri().path();
    if path.contains("%00") && !path.starts_with("/keygen/") {
        return ApiError::not_found().into_response();
    }
    next.run(request).await
}

async fn method_not_allowed() -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "this route does not take that method",
    )
    .into_response()
}

/// Serves on an already-bound listener until `shutdown` resolves, then finishes the
/// requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Everything that can fail comes first, before any job is started.
    let metrics_listener = match state.metrics_listen {
        Some(address) => Some(tokio::net::TcpListener::bind(address).await?),
        None => None,
    };
    let tls = state.tls.clone();
    let mut jobs = vec![
        jobs::spawn(state.clone()),
        jobs::spawn_usage_rollup(state.clone()),
        tls::reload_on_hangup(tls.clone())?,
    ];
    jobs.extend(metrics::install());
    jobs.extend(notify::spawn(state.clone()));
    jobs.extend(live::spawn_backplane(&state).await);
    let flusher = heartbeats::spawn_flusher(state.clone());
    if let Some(metrics_listener) = metrics_listener {
        let router = metrics_router(state.clone());
        jobs.push(tokio::spawn(async move {
            let never = std::future::pending::<()>();
            if let Err(error) = http::serve(metrics_listener, router, 64, None, never).await {
                tracing::warn!(%error, "the metrics listener stopped");
            }
        }));
    }
    let max_connections = state.max_connections;
    let served = http::serve(
        listener,
        router(state.clone()),
        max_connections,
        tls,
        shutdown,
    )
    .await;
    for job in jobs {
        job.abort();
    }
    // What the last heartbeats asked for goes to disk before the process ends (after the
    // flush in progress, if any: the book runs one at a time).
    state.live.heartbeats.flush(state.store.as_ref()).await;
    if let Some(flusher) = flusher {
        flusher.abort();
    }
    served
}
