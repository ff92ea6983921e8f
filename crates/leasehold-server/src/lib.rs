//! The Leasehold server: the admin API over one [`Store`], its start-up checks, and
//! workspace creation (`leasehold init`).

mod api;
mod client;
mod console;
mod convert;
pub mod error;
pub mod extract;
pub mod jobs;
pub mod license_cache;
pub mod limits;
pub mod live;
pub mod notify;
pub mod setup;
pub mod signing;

use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use error::ApiError;
use leasehold_core::secrets::MasterKey;
use leasehold_store::Store;
use rand::RngCore;
use std::future::Future;
use std::sync::Arc;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

pub use setup::{create_workspace, open_state, Settings};

/// What every handler shares: one pointer, so the clone each extractor and middleware
/// makes per request is one reference count, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub store: Arc<dyn Store>,
    pub master: MasterKey,
    pub signers: Arc<signing::Signers>,
    pub limits: Arc<limits::Limits>,
    pub live: Arc<live::LiveHub>,
    /// Sign-in attempts per account and per IP (console), and per IP (portal).
    pub login_limits: Arc<limits::Limits>,
    /// How often the lease sweeper runs.
    pub sweep_interval: std::time::Duration,
    /// Sends webhooks and emails from the outbox.
    pub notifier: Arc<notify::Notifier>,
}

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
        .route(
            "/openapi.json",
            get(move || {
                let openapi = openapi.clone();
                async move { Json(openapi.as_ref().clone()) }
            }),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(refuse_nul_in_path))
        .layer(DefaultBodyLimit::max(extract::BODY_LIMIT))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal().into_response()
        }))
        // Spans name the method and path only: a query string can carry a license key.
    .layer(TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<_>| {
        tracing::info_span!("request", method = %request.method(), path = %request.uri().path())
    }))
        .with_state(state)
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
    if request.uri().path().contains("%00") {
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
    let mut jobs = vec![jobs::spawn(state.clone())];
    jobs.extend(notify::spawn(state.clone()));
    jobs.extend(live::spawn_backplane(&state).await);
    let served = axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    for job in jobs {
        job.abort();
    }
    served
}
