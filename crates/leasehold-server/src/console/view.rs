//! The console's markup: the page frame and the small pieces pages share.

use super::ConsoleSession;
use crate::convert;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::NaiveDate;
use leasehold_core::{effective_status, EffectiveStatus};
use leasehold_store::{today, License, Seat};
use maud::{html, Markup, DOCTYPE};

/// Content-Security-Policy of every console page: nothing inline, nothing foreign.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn respond(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        markup,
    )
        .into_response()
}

pub fn page(title: &str, session: Option<&ConsoleSession>, body: Markup) -> Response {
    respond(StatusCode::OK, frame(title, session, body))
}

pub fn frame(title: &str, session: Option<&ConsoleSession>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Leasehold" }
                link rel="stylesheet" href="/assets/console.css";
                script src="/assets/console.js" defer {}
            }
            body {
                header {
                    strong { "Leasehold" }
                    @if let Some(session) = session {
                        nav aria-label="Main" {
                            a href="/" { "Live usage" }
                            a href="/applications" { "Applications" }
                            a href="/contacts" { "Contacts" }
                            a href="/reminders" { "Reminders" }
                            a href="/usage" { "Usage" }
                            @if session.can(leasehold_core::Permission::LicenseManage) {
                                a href="/notifications" { "Notifications" }
                            }
                            a href="/audit" { "Audit log" }
                            @if session.can(leasehold_core::Permission::WorkspaceAdmin) {
                                a href="/members" { "Members" }
                            }
                        }
                        span { (session.email) " · " (session.principal.role.as_str()) }
                        form method="post" action="/logout" {
                            (csrf(session))
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

pub fn error_page(session: Option<&ConsoleSession>, status: StatusCode, message: &str) -> Response {
    respond(
        status,
        frame(
            "Error",
            session,
            html! { h1 { "Something is not right" } p.error role="alert" { (message) } p { a href="/" { "Back" } } },
        ),
    )
}

pub fn csrf(session: &ConsoleSession) -> Markup {
    html! { input type="hidden" name="_csrf" value=(session.csrf); }
}

pub fn login(csrf: &str, error: Option<&str>) -> Response {
    let message = match error {
        Some("invalid") => Some("Wrong email or password."),
        Some("expired") => Some("The form expired; please sign in again."),
        Some("disabled") => Some("This account is disabled; ask a workspace owner."),
        _ => None,
    };
    page(
        "Sign in",
        None,
        html! {
            h1 { "Sign in" }
            @if let Some(message) = message { p.error role="alert" { (message) } }
            form method="post" action="/login" {
                input type="hidden" name="_csrf" value=(csrf);
                label for="email" { "Email" }
                input id="email" name="email" type="email" autocomplete="username" required;
                label for="password" { "Password" }
                input id="password" name="password" type="password" autocomplete="current-password" required;
                p { button.primary type="submit" { "Sign in" } }
            }
            p.muted { "License holders: " a href="/portal" { "sign in with your license key" } "." }
        },
    )
}

pub fn day(d: Option<NaiveDate>) -> String {
    d.map(|d| d.to_string()).unwrap_or_else(|| "—".into())
}

pub fn when(ms: Option<i64>) -> String {
    ms.map(|ms| {
        convert::time(ms)
            .format("%Y-%m-%d %H:%M:%S UTC")
            .to_string()
    })
    .unwrap_or_else(|| "—".into())
}

/// A day (ms, UTC) as `2026-12-01`.
pub fn day_label(ms: i64) -> String {
    convert::time(ms).format("%Y-%m-%d").to_string()
}

/// A day (ms, UTC) as `Dec 01`, for a chart's axis.
pub fn short_day_label(ms: i64) -> String {
    convert::time(ms).format("%b %d").to_string()
}

pub fn money(amount_minor: Option<i64>, currency: Option<&str>) -> String {
    match (amount_minor, currency) {
        (Some(amount), Some(currency)) => {
            let sign = if amount < 0 { "-" } else { "" };
            format!(
                "{sign}{}.{:02} {currency}",
                amount.abs() / 100,
                amount.abs() % 100
            )
        }
        _ => "—".into(),
    }
}

/// The status badge of a license card: active, expiring soon (30 days), suspended, revoked, expired.
pub fn status_badge(license: &License) -> Markup {
    let today = today();
    let (class, text) = match effective_status(license.status, license.expires_on, today) {
        EffectiveStatus::Revoked => ("revoked", "Revoked"),
        EffectiveStatus::Suspended => ("suspended", "Suspended"),
        EffectiveStatus::Expired => ("expired", "Expired"),
        EffectiveStatus::Active => match license.expires_on {
            Some(day) if (day - today).num_days() <= 30 => ("expiring", "Expiring soon"),
            _ => ("active", "Active"),
        },
    };
    html! { span class={"badge " (class)} data-status=(class) { (text) } }
}

/// Who holds a seat, as the ledger shows it.
pub fn holder(seat: &Seat) -> Markup {
    html! {
        @if let Some(name) = &seat.contact_name { (name) }
        @if let Some(name) = &seat.assignee_name { @if seat.contact_name.is_some() { " · " } (name) }
        @if let Some(device) = &seat.device_name { " · " (device) }
        @if let Some(identifier) = &seat.identifier { (identifier) }
        // A Keygen machine's lease is of no OS user (DESIGN §9).
        @if let Some(user) = seat.os_user.as_deref().filter(|u| !u.is_empty()) { " · " (user) }
    }
}

pub fn terminated_badge(seat: &Seat) -> Markup {
    html! {
        @if seat.contact_terminated && seat.released_at.is_none() {
            " " span.badge.terminated { "Contact terminated — reclaim" }
        }
    }
}
