//! The Keygen-compatible API (DESIGN §9), mounted at `/keygen`: applications written
//! for Keygen's licensing API run against Leasehold by pointing their API URL here.
//!
//! The facade translates and nothing more. Every seat goes through the client protocol's
//! store calls (the one seat decision, the ledger, the policies, the audit log, the live
//! view, webhooks, the queue and the usage counters), so a seat taken here is a seat
//! like any other: a machine on a dedicated license is an activation; on a concurrent
//! one, a lease of no OS user with one instance, `keygen` (its ping is a heartbeat, its
//! deletion a check-in).
//!
//! Every answer under `/keygen`, errors, 204s and unknown routes included, is signed
//! Keygen's way ([`sign`]) by [`edge`], which wraps the whole facade router, so it also
//! sees what the router answers itself (404s, 405s, extractor rejections).

/// Runs `$body` for the caller a request authenticates as (see [`Licensee::require`]),
/// answering its result signed by the caller's workspace.
macro_rules! with_licensee {
    ($state:expr, $headers:expr, $slug:expr, |$licensee:ident| $body:expr) => {{
        match super::Licensee::require(
            &$state,
            &$headers,
            $slug.as_deref(),
            $crate::license_cache::Need::Settings,
        )
        .await
        {
            Ok($licensee) => {
                let result: super::doc::KgResult<axum::response::Response> = async { $body }.await;
                $licensee.answer(result)
            }
            Err(error) => axum::response::IntoResponse::into_response(error),
        }
    }};
}

mod doc;
mod files;
mod licenses;
mod machines;
mod sign;

use crate::client::{license_header, Caller};
use crate::license_cache::Need;
use crate::signing::Signer;
use crate::AppState;
use axum::body::Body;
use axum::extract::{OriginalUri, Request};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use doc::{KgError, KgResult};
use leasehold_core::{effective_status, EffectiveStatus};
use leasehold_store::{today, License};
use std::sync::Arc;
use tower::ServiceExt;

/// The largest answer the facade signs (license files are a few KiB).
const MAX_ANSWER_BYTES: usize = 4 << 20;

/// The facade, to nest at `/keygen`: its routes behind [`edge`].
pub fn router(state: AppState) -> Router {
    let routes = Router::new()
        .route("/v1/ping", get(ping))
        .route(
            "/v1/licenses/actions/validate-key",
            post(licenses::validate_key),
        )
        .route(
            "/v1/licenses/{id}/actions/validate",
            post(licenses::validate),
        )
        .route(
            "/v1/licenses/{id}/actions/check-out",
            post(files::license_file).get(files::license_file),
        )
        .route(
            "/v1/licenses/{id}/actions/check-in",
            post(licenses::check_in),
        )
        .route("/v1/licenses/{id}/machines", get(licenses::machines))
        .route(
            "/v1/licenses/{id}/entitlements",
            get(licenses::entitlements),
        )
        .route(
            "/v1/licenses/{id}/actions/increment-usage",
            post(licenses::increment_usage),
        )
        .route("/v1/machines", post(machines::activate))
        .route(
            "/v1/machines/{id}",
            get(machines::show).delete(machines::deactivate),
        )
        .route("/v1/machines/{id}/actions/ping", post(machines::ping))
        .route(
            "/v1/machines/{id}/actions/check-out",
            post(files::machine_file),
        )
        .fallback(|uri: Uri| async move {
            KgError::new(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                format!("The requested endpoint '{}' was not found", uri.path()),
            )
        })
        .method_not_allowed_fallback(|| async {
            KgError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "this endpoint does not take that method",
            )
        })
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            KgError::from(crate::error::ApiError::internal()).into_response()
        }))
        .with_state(state.clone());
    Router::new().fallback_service(tower::service_fn(move |request: Request| {
        let routes = routes.clone();
        let state = state.clone();
        async move { Ok::<_, std::convert::Infallible>(edge(state, request, routes).await) }
    }))
}

/// The workspace a `/keygen/{slug}/v1/…` or `/keygen/v1/accounts/{slug}/…` path names.
#[derive(Clone, Debug)]
struct Slug(String);

/// What an answer is signed with: its workspace's key and id.
#[derive(Clone)]
struct SignedBy(Arc<Signer>, String);

/// Rewrites the slug forms of the path to `/v1/…`, answers, and signs the answer with
/// the target the client asked for.
async fn edge(state: AppState, mut request: Request, routes: Router) -> Response {
    let target = target(&state, &request);
    let slug = unprefix(&mut request);
    let key = license_header(request.headers()).map(str::to_string);
    if let Some(slug) = &slug {
        request.extensions_mut().insert(Slug(slug.clone()));
    }
    let response = if request.uri().path().contains("%00") {
        KgError::not_found("endpoint", "").into_response()
    } else if let Some(refused) = crate::client::ip_refusal(&state, &request) {
        KgError::from(refused).into_response()
    } else {
        match routes.oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    };
    let names = RequestNames {
        slug: slug.as_deref(),
        key: key.as_deref(),
    };
    signed(&state, &target, names, response).await
}

/// The request target and host the client signs against: as it sent them, or under
/// the configured public address behind a rewriting proxy.
fn target(state: &AppState, request: &Request) -> sign::Target {
    let inner = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let (path_and_query, host) = match &state.keygen_public_url {
        Some(public) => {
            let host = match public.port() {
                Some(port) => format!("{}:{port}", public.host_str().unwrap_or_default()),
                None => public.host_str().unwrap_or_default().to_string(),
            };
            (
                format!("{}{inner}", public.path().trim_end_matches('/')),
                host,
            )
        }
        None => {
            let original = request
                .extensions()
                .get::<OriginalUri>()
                .map(|o| o.0.clone())
                .unwrap_or_else(|| request.uri().clone());
            let host = request
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
                .or_else(|| original.authority().map(|a| a.to_string()))
                .unwrap_or_default();
            (
                original
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_string(),
                host,
            )
        }
    };
    sign::Target {
        method: request.method().as_str().to_ascii_lowercase(),
        path_and_query,
        host,
    }
}

/// `/{slug}/v1/…` and `/v1/accounts/{slug}/…` become `/v1/…`, answering the slug (or
/// the workspace's id, which names it as well); `//v1/…` and `/{slug}//v1/…` (an API URL
/// configured with a trailing slash) become `/v1/…`.
fn unprefix(request: &mut Request) -> Option<String> {
    let (path, query) = {
        let uri = request.uri();
        (uri.path().to_string(), uri.query().map(str::to_string))
    };
    let trimmed = path.trim_start_matches('/');
    let (slug, rest) = if let Some(after) = trimmed.strip_prefix("v1/accounts/") {
        match after.split_once('/') {
            Some((slug, rest)) => (Some(slug), format!("/v1/{rest}")),
            None => (Some(after), "/v1".to_string()),
        }
    } else if trimmed == "v1" || trimmed.starts_with("v1/") {
        (None, format!("/{trimmed}"))
    } else {
        match trimmed.split_once('/') {
            Some((slug, rest))
                if rest.trim_start_matches('/') == "v1"
                    || rest.trim_start_matches('/').starts_with("v1/") =>
            {
                (Some(slug), format!("/{}", rest.trim_start_matches('/')))
            }
            _ => (None, path.clone()),
        }
    };
    if rest != path {
        let rewritten = match &query {
            Some(query) => format!("{rest}?{query}"),
            None => rest,
        };
        if let Ok(uri) = rewritten.parse::<Uri>() {
            *request.uri_mut() = uri;
        }
    }
    slug.filter(|s| !s.is_empty()).map(str::to_string)
}

/// Signs the answer: with its workspace's key when a handler resolved one; else with the
/// workspace the path names, the workspace of the request's license key (a refusal
/// before the key was looked up, such as a rate limit), the only workspace, or the
/// server's key.
async fn signed(
    state: &AppState,
    target: &sign::Target,
    request: RequestNames<'_>,
    response: Response,
) -> Response {
    let signed_by = match response.extensions().get::<SignedBy>() {
        Some(by) => by.clone(),
        None => fallback_signer(state, request).await,
    };
    let (parts, body) = response.into_parts();
    let (mut parts, bytes) = match axum::body::to_bytes(body, MAX_ANSWER_BYTES).await {
        Ok(bytes) => (parts, bytes),
        Err(_) => {
            let (parts, body) = KgError::from(crate::error::ApiError::internal())
                .into_response()
                .into_parts();
            let bytes = axum::body::to_bytes(body, MAX_ANSWER_BYTES)
                .await
                .unwrap_or_default();
            (parts, bytes)
        }
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    if parts.status == StatusCode::TOO_MANY_REQUESTS {
        rate_limit_headers(state, &mut parts.headers);
    }
    let SignedBy(signer, key_id) = signed_by;
    sign::sign_headers(
        &mut parts.headers,
        &signer,
        &key_id,
        target,
        &bytes,
        chrono::Utc::now(),
    );
    Response::from_parts(parts, Body::from(bytes))
}

/// What a request names that can choose the key its answer is signed with.
#[derive(Clone, Copy)]
struct RequestNames<'a> {
    slug: Option<&'a str>,
    key: Option<&'a str>,
}

async fn fallback_signer(state: &AppState, request: RequestNames<'_>) -> SignedBy {
    let store = state.store.as_ref();
    let workspace_id = match (request.slug, request.key) {
        (Some(slug), _) => workspace_named(state, slug).await.map(|w| w.id),
        (None, Some(key)) => match crate::client::workspace_of_key(state, key).await {
            Some(id) => Some(id),
            None => only_workspace(state).await,
        },
        (None, None) => only_workspace(state).await,
    };
    if let Some(id) = workspace_id {
        if let Ok(signer) = state.signers.workspace(store, &id).await {
            return SignedBy(signer, id);
        }
    }
    SignedBy(state.signers.server(), "server".into())
}

async fn only_workspace(state: &AppState) -> Option<String> {
    let workspace = state.store.only_workspace().await.ok().flatten()?;
    Some(workspace.id)
}

/// The workspace a path names, by its slug or its id.
async fn workspace_named(state: &AppState, name: &str) -> Option<leasehold_store::Workspace> {
    match state.store.workspace_by_slug(name).await {
        Ok(Some(workspace)) => Some(workspace),
        _ => state.store.workspace(name).await.ok(),
    }
}

/// The headers Keygen clients read from a 429 (`X-RateLimit-*`; `Retry-After` is set by
/// the refusal).
fn rate_limit_headers(state: &AppState, headers: &mut HeaderMap) {
    let (_, burst) = state.limits.rate();
    let retry_after = headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(1);
    let reset = chrono::Utc::now().timestamp() + retry_after;
    let mut put = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    put("x-ratelimit-window", "1s".into());
    put("x-ratelimit-count", burst.to_string());
    put("x-ratelimit-limit", burst.to_string());
    put("x-ratelimit-remaining", "0".into());
    put("x-ratelimit-reset", reset.to_string());
}

/// The Keygen-compatible API's part of `/openapi.json` (its answers are Keygen's JSON:API
/// documents; see the README's "Coming from Keygen").
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(ping, licenses::validate_key, licenses::validate, licenses::check_in, licenses::machines,
        licenses::entitlements, licenses::increment_usage, files::license_file, files::machine_file,
        machines::activate, machines::show, machines::deactivate, machines::ping),
    tags((name = "keygen", description = "The Keygen-compatible API (DESIGN §9): what applications \
        written for Keygen's licensing API call, with the license key in `Authorization: License …`. \
        Every answer is signed Keygen's way (`Keygen-Signature`, `Keygen-Date`, `Keygen-Digest`). \
        The same routes answer under `/keygen/{workspace-slug}/v1/…` and `/keygen/v1/accounts/{workspace}/…`"))
)]
pub(crate) struct KeygenDoc;

/// The refusals every keyed Keygen route can answer, for `/openapi.json`.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
enum KeygenRefusals {
    #[response(
        status = 400,
        description = "A malformed request",
        content_type = "application/vnd.api+json"
    )]
    Invalid,
    #[response(
        status = 401,
        description = "`LICENSE_INVALID`: no license has this key",
        content_type = "application/vnd.api+json"
    )]
    Unknown,
    #[response(
        status = 403,
        description = "`LICENSE_SUSPENDED`, `LICENSE_EXPIRED`, or another license's",
        content_type = "application/vnd.api+json"
    )]
    Refused,
    #[response(
        status = 429,
        description = "Past the rate limit (`Retry-After`, `X-RateLimit-*`)",
        content_type = "application/vnd.api+json"
    )]
    Limited,
}

/// `GET /v1/ping`: the service answers (signed, unlike Keygen's own).
#[utoipa::path(get, path = "/keygen/v1/ping", tag = "keygen",
    responses((status = 200, description = "`ok`, signed", content_type = "text/plain")))]
async fn ping() -> Response {
    let mut response = "ok".into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The caller a Keygen request authenticates as: its license, by the key in
/// `Authorization: License …`, and the key as it sent it (the files' encryption keys
/// derive from it).
struct Licensee {
    caller: Caller,
    key: String,
}

impl Licensee {
    /// The license of `key` (the header's unless given), in the workspace the path
    /// names if it names one. `Ok(None)`: no live license has this key there.
    async fn find(
        state: &AppState,
        headers: &HeaderMap,
        slug: Option<&Slug>,
        key: Option<&str>,
        need: Need,
    ) -> KgResult<Option<Licensee>> {
        let Some(key) = key.or_else(|| license_header(headers)) else {
            return Ok(None);
        };
        let caller = match Caller::resolve(state, headers, Some(key), need).await {
            Ok(Some(caller)) => caller,
            Ok(None) => return Ok(None),
            // A key of another shape is one no license has.
            Err(error) if error.code == "INVALID_REQUEST" => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        if let Some(Slug(slug)) = slug {
            let workspace = state.store.workspace(&caller.license.workspace_id).await?;
            if workspace.slug != *slug && workspace.id != *slug {
                return Ok(None);
            }
        }
        if standing(&caller.license) == EffectiveStatus::Revoked {
            return Ok(None);
        }
        Ok(Some(Licensee {
            caller,
            key: key.to_string(),
        }))
    }

    /// The caller of a route that needs a license (every one but validate-key): 401
    /// `LICENSE_INVALID` for an unknown key, 403 `LICENSE_SUSPENDED` for a suspended
    /// license, as Keygen authenticates.
    async fn require(
        state: &AppState,
        headers: &HeaderMap,
        slug: Option<&Slug>,
        need: Need,
    ) -> KgResult<Licensee> {
        let licensee = Self::find(state, headers, slug, None, need)
            .await?
            .ok_or_else(KgError::license_invalid)?;
        if standing(&licensee.caller.license) == EffectiveStatus::Suspended {
            return Err(KgError::suspended());
        }
        Ok(licensee)
    }

    fn license(&self) -> &Arc<License> {
        &self.caller.license
    }

    /// A license route's `{id}` must be this license's.
    fn require_license(&self, id: &str) -> KgResult<()> {
        if self.caller.license.id == id {
            Ok(())
        } else {
            Err(KgError::not_found("license", id))
        }
    }

    /// The answer, to be signed by this caller's workspace.
    fn sign(&self, mut response: Response) -> Response {
        response.extensions_mut().insert(SignedBy(
            self.caller.signer.clone(),
            self.caller.license.workspace_id.clone(),
        ));
        response
    }

    /// The answer of a result, signed by this caller's workspace either way.
    fn answer(&self, result: KgResult<Response>) -> Response {
        self.sign(result.into_response())
    }
}

fn standing(license: &License) -> EffectiveStatus {
    effective_status(license.status, license.expires_on, today())
}

/// The body of a request that may come without one (the default when empty).
fn body_or_default<T: serde::de::DeserializeOwned + Default>(bytes: &[u8]) -> KgResult<T> {
    crate::client::seats::optional_body(bytes).map_err(KgError::from)
}
