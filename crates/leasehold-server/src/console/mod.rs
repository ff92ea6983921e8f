//! The admin console and the customer portal: server-rendered HTML (maud), a little
//! vanilla JS for confirmations and live regions, all embedded in the binary.
//!
//! Sign-in sets an `HttpOnly; SameSite=Lax` session cookie (`Secure` behind TLS); every
//! form carries the session's CSRF token; what a role may not do is neither shown nor
//! accepted (the shared handlers check permissions again).

/// A result's value, or the console's error page for its error.
macro_rules! tri {
    ($session:expr, $e:expr) => {
        match $e {
            Ok(value) => value,
            Err(error) => {
                return $crate::console::failed(&$session, $crate::error::ApiError::from(error))
            }
        }
    };
}

mod applications;
mod contacts;
mod license_form;
mod licenses;
mod logs;
mod members;
mod notifications;
mod overview;
mod paging;
mod portal;
mod usage;
mod view;

use crate::error::ApiError;
use crate::extract::token_hash;
use crate::AppState;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request, State};
use axum::http::header::{self, HeaderMap};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use leasehold_store::Session;
use serde::Deserialize;
use std::collections::HashMap;

use crate::session::{
    cookie, form_carries_csrf, random_token, set_cookie, ConsoleSession, SESSION_COOKIE,
};

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
        .merge(overview::routes())
        .merge(applications::routes())
        .merge(licenses::routes())
        .merge(contacts::routes())
        .merge(logs::routes())
        .merge(members::routes())
        .merge(notifications::routes())
        .merge(portal::routes())
        .merge(usage::routes())
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

/// A form's fields by name.
type FormData = HashMap<String, String>;

/// An API error as a console page.
fn failed(session: &ConsoleSession, error: ApiError) -> Response {
    view::error_page(Some(session), error.status, &error.message)
}

/// A form a signed-in member posted, its CSRF token checked: every console form handler
/// takes one (as its last argument: it reads the body), so none can forget the check.
/// `form` holds each field's last value, `fields` every pair in order (repeated
/// checkboxes).
pub(crate) struct Posted {
    pub session: ConsoleSession,
    pub form: HashMap<String, String>,
    pub fields: Vec<(String, String)>,
}

impl FromRequest<AppState> for Posted {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let session = ConsoleSession::from_request_parts(&mut parts, state).await?;
        let request = Request::from_parts(parts, body);
        let Form(fields) = Form::<Vec<(String, String)>>::from_request(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let form: HashMap<String, String> = fields.iter().cloned().collect();
        if !form_carries_csrf(&form, &session.csrf) {
            return Err(view::error_page(
                Some(&session),
                StatusCode::FORBIDDEN,
                "The form expired; reload the page and try again.",
            ));
        }
        Ok(Posted {
            session,
            form,
            fields,
        })
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
    Posted {
        session: _,
        form: _,
        ..
    }: Posted,
) -> Response {
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
