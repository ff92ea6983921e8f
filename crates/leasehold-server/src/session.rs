//! Who a browser is: the console's member sessions (an `HttpOnly` cookie naming a
//! stored session, with its CSRF token) and the cookie helpers the console and the
//! portal share. The API's extractor reads a console session too (the console's own
//! scripts call the API with it), so this lives apart from both.

use crate::error::ApiResult;
use crate::extract::{token_hash, Principal};
use crate::secrets::constant_time_eq;
use crate::AppState;
use axum::extract::FromRequestParts;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use leasehold_store::Actor;
use rand::RngCore;
use std::collections::HashMap;

pub(crate) const SESSION_COOKIE: &str = "lh_session";
pub(crate) const PORTAL_COOKIE: &str = "lh_portal";
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
