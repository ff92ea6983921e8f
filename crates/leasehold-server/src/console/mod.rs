//! The admin console and the customer portal: server-rendered HTML (maud), a little
//! vanilla JS for confirmations and live regions, all embedded in the binary.
//!
//! Sign-in sets an `HttpOnly; SameSite=Lax` session cookie (`Secure` behind TLS); every
//! form carries the session's CSRF token; what a role may not do is neither shown nor
//! accepted (the shared handlers check permissions again).

mod members;
mod notifications;
mod pages;
mod portal;
mod view;

use crate::error::{ApiError, ApiResult};
use crate::extract::{token_hash, Principal};
use crate::secrets::constant_time_eq;
use crate::AppState;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use base64::Engine;
use leasehold_store::{Actor, Session};
use rand::RngCore;
use serde::Deserialize;
use std::collections::HashMap;

pub(crate) const SESSION_COOKIE: &str = "lh_session";
pub(crate) const PORTAL_COOKIE: &str = "lh_portal";
const LOGIN_CSRF_COOKIE: &str = "lh_login_csrf";
const SESSION_HOURS: i64 = 12;
/// The longest email address there is (RFC 5321's path limit less its brackets).
const MAX_EMAIL_CHARS: usize = 254;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/assets/console.css", get(css))
        .route("/assets/console.js", get(js))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .merge(pages::routes())
        .merge(members::routes())
        .merge(notifications::routes())
        .merge(portal::routes())
}

async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("../../assets/console.css"),
    )
}

async fn js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("../../assets/console.js"),
    )
}

pub(crate) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_string())
}

/// Whether the browser reached us over TLS (directly or through a terminating proxy).
fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

pub(crate) fn set_cookie(
    headers: &HeaderMap,
    name: &str,
    value: &str,
    max_age_s: i64,
) -> HeaderValue {
    let secure = if over_tls(headers) { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_s}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A signed-in console member.
#[derive(Clone)]
pub struct ConsoleSession {
    pub principal: Principal,
    pub email: String,
    pub csrf: String,
}

impl ConsoleSession {
    pub fn can(&self, permission: leasehold_core::Permission) -> bool {
        self.principal.role.allows(permission)
    }

    /// Refuses a form whose CSRF token is not this session's.
    pub fn check_csrf(&self, form: &HashMap<String, String>) -> Result<(), Box<Response>> {
        if form_carries_csrf(form, &self.csrf) {
            Ok(())
        } else {
            Err(Box::new(view::error_page(
                Some(self),
                StatusCode::FORBIDDEN,
                "The form expired; reload the page and try again.",
            )))
        }
    }
}

/// Whether a posted form carries the session's CSRF token (compared in constant time).
pub(crate) fn form_carries_csrf(form: &HashMap<String, String>, csrf: &str) -> bool {
    let sent = form.get("_csrf").map(String::as_str).unwrap_or_default();
    constant_time_eq(sent.as_bytes(), csrf.as_bytes())
}

/// The member session of this request's cookie, if it is live.
pub(crate) async fn session_from_headers(
    state: &AppState,
    headers: &HeaderMap,
) -> ApiResult<Option<ConsoleSession>> {
    let Some(token) = cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let Some(session) = state.store.session(&token_hash(&token)).await? else {
        return Ok(None);
    };
    let (Some(member_id), "member") = (session.member_id.as_deref(), session.kind.as_str()) else {
        return Ok(None);
    };
    let member = match state.store.member(&session.workspace_id, member_id).await {
        // Disabling a member ends their sessions; this is the belt to those braces.
        Ok(member) if member.disabled_at.is_some() => return Ok(None),
        Ok(member) => member,
        Err(leasehold_store::StoreError::NotFound) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    Ok(Some(ConsoleSession {
        principal: Principal {
            workspace_id: member.workspace_id,
            role: member.role,
            actor: Actor {
                kind: "member",
                id: Some(member.id),
                label: member.email.clone(),
            },
        },
        email: member.email,
        csrf: session.csrf_token,
    }))
}

impl FromRequestParts<AppState> for ConsoleSession {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match session_from_headers(state, &parts.headers).await {
            Ok(Some(session)) => Ok(session),
            Ok(None) => Err(Redirect::to("/login").into_response()),
            Err(error) => Err(error.into_response()),
        }
    }
}

#[derive(Deserialize)]
struct LoginQuery {
    error: Option<String>,
}

async fn login_page(
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<LoginQuery>,
) -> Response {
    let csrf = random_token();
    let mut response = view::login(&csrf, q.error.as_deref()).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(&headers, LOGIN_CSRF_COOKIE, &csrf, 3600),
    );
    response
}

async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    // Double-submit: the form's token must match the cookie set with the form.
    let cookie_token = cookie(&headers, LOGIN_CSRF_COOKIE).unwrap_or_default();
    if cookie_token.is_empty() || !form_carries_csrf(&form, &cookie_token) {
        return Redirect::to("/login?error=expired").into_response();
    }
    let email = form
        .get("email")
        .map(|e| e.trim().to_lowercase())
        .unwrap_or_default();
    let password = form.get("password").cloned().unwrap_or_default();
    let limits = &state.login_limits;
    let from_ip = limits.check_ip(state.client_ip(peer.ip(), &headers));
    // No address is longer (RFC 5321): a longer one is no account, and is not kept as a
    // limiter key either (the address's limit still counts it).
    if from_ip.is_ok() && email.chars().count() > MAX_EMAIL_CHARS {
        crate::setup::verify_password(password, crate::setup::dummy_password_hash().await).await;
        return Redirect::to("/login?error=invalid").into_response();
    }
    if from_ip.is_err() || limits.check_key(&format!("login:{email}")).is_err() {
        return view::error_page(
            None,
            StatusCode::TOO_MANY_REQUESTS,
            "Too many sign-in attempts from this address or for this account; wait a minute and try again.",
        );
    }
    let members = match state.store.members_by_email(&email).await {
        Ok(members) => members,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let mut signed_in = None;
    if members.is_empty() {
        // A password is checked either way, so that an unknown address answers as slowly
        // as a known one: the time tells no one which addresses have accounts.
        crate::setup::verify_password(password.clone(), crate::setup::dummy_password_hash().await)
            .await;
    }
    let mut disabled = false;
    for member in members {
        if crate::setup::verify_password(password.clone(), member.password_hash.clone()).await {
            if member.disabled_at.is_some() {
                disabled = true;
                continue;
            }
            signed_in = Some(member);
            break;
        }
    }
    let Some(member) = signed_in else {
        let error = if disabled { "disabled" } else { "invalid" };
        return Redirect::to(&format!("/login?error={error}")).into_response();
    };
    let token = random_token();
    let now = chrono::Utc::now().timestamp_millis();
    let session = Session {
        token_hash: token_hash(&token),
        kind: "member".into(),
        workspace_id: member.workspace_id,
        member_id: Some(member.id),
        license_id: None,
        csrf_token: random_token(),
        created_at: now,
        expires_at: now + SESSION_HOURS * 3600 * 1000,
    };
    if let Err(e) = state.store.create_session(session).await {
        return ApiError::from(e).into_response();
    }
    let mut response = Redirect::to("/").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&headers, SESSION_COOKIE, &token, SESSION_HOURS * 3600),
    );
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&headers, LOGIN_CSRF_COOKIE, "", 0),
    );
    response
}

async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    session: ConsoleSession,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Err(refused) = session.check_csrf(&form) {
        return *refused;
    }
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        let _ = state.store.delete_session(&token_hash(&token)).await;
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(&headers, SESSION_COOKIE, "", 0),
    );
    response
}
