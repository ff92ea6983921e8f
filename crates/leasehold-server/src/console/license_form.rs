//! The license form: its values, its page, and the form read into the API's JSON.

use super::view::{self, csrf};
use super::{ConsoleSession, FormData};
use crate::error::ApiError;
use axum::http::StatusCode;
use axum::response::Response;
use leasehold_store::{Application, License};
use maud::{html, Markup};
use serde_json::{json, Map, Value};

pub(super) fn license_values(l: &License) -> FormData {
    let mut v = FormData::new();
    let mut put = |k: &str, val: Option<String>| {
        v.insert(k.to_string(), val.unwrap_or_default());
    };
    put("licensed_to", Some(l.licensed_to.clone()));
    put("vendor", l.vendor.clone());
    put("type", Some(l.license_type.as_str().into()));
    put("status", Some(l.status.as_str().into()));
    put("seat_model", Some(l.seat_model.as_str().into()));
    put("seats_total", Some(l.seats_total.to_string()));
    put("version", l.version.clone());
    put(
        "cost",
        l.cost_amount_minor
            .map(|a| format!("{}.{:02}", a / 100, a % 100)),
    );
    put("purchased_on", l.purchased_on.map(|d| d.to_string()));
    put("expires_on", l.expires_on.map(|d| d.to_string()));
    put(
        "maintenance_expires_on",
        l.maintenance_expires_on.map(|d| d.to_string()),
    );
    put("po_number", l.po_number.clone());
    put("notes", l.notes.clone());
    put("lease_ttl_s", Some(l.lease_ttl_s.to_string()));
    put("queue", Some(l.queue.as_str().into()));
    put("queue_ttl_s", Some(l.queue_ttl_s.to_string()));
    put("idle_timeout_s", l.idle_timeout_s.map(|s| s.to_string()));
    put("idle_reclaim", Some(l.idle_reclaim.as_str().into()));
    put("max_borrow_days", Some(l.max_borrow_days.to_string()));
    put(
        "max_borrowed_seats",
        l.max_borrowed_seats.map(|n| n.to_string()),
    );
    v
}

/// The license form; `editing` is the license being edited, `error` the field and message.
pub(super) fn license_form_page(
    session: &ConsoleSession,
    apps: &[Application],
    editing: Option<&License>,
    values: &FormData,
    error: Option<(String, String)>,
    status: StatusCode,
) -> Response {
    let value = |k: &str| values.get(k).cloned().unwrap_or_default();
    let err = |k: &str| -> Markup {
        html! { @if let Some((field, message)) = &error { @if field == k || field.starts_with(&format!("{k}.")) { span.error id={"err-" (k)} role="alert" { " " (message) } } } }
    };
    let selected = |k: &str, v: &str| value(k) == v;
    let action = match editing {
        Some(l) => format!("/licenses/{}/edit", l.id),
        None => "/licenses".to_string(),
    };
    let title = if editing.is_some() {
        "Edit license"
    } else {
        "Add license"
    };
    view::respond(
        status,
        view::frame(
            title,
            Some(session),
            html! {
                h1 { (title) }
                @if let Some((field, message)) = &error { p.error role="alert" { "Please correct " (field) ": " (message) } }
                form method="post" action=(action) novalidate {
                    (csrf(session))
                    div.grid2 {
                        @if editing.is_none() {
                            div {
                                label for="f-app" { "Application" }
                                select #f-app name="application_id" {
                                    @for app in apps { option value=(app.id) selected[selected("application_id", &app.id)] { (app.name) } }
                                }
                                (err("application_id"))
                            }
                            div { label for="f-key" { "Product key (blank: generate one)" } input #f-key name="key" value=(value("key")) autocomplete="off"; (err("key")) }
                        }
                        div { label for="f-to" { "Licensed to" } input #f-to name="licensed_to" value=(value("licensed_to")) required; (err("licensed_to")) }
                        div { label for="f-vendor" { "Vendor" } input #f-vendor name="vendor" value=(value("vendor")); (err("vendor")) }
                        div { label for="f-type" { "Type" }
                            select #f-type name="type" { @for t in ["perpetual", "subscription", "trial"] { option value=(t) selected[selected("type", t)] { (t) } } } (err("type")) }
                        div { label for="f-status" { "Status" }
                            select #f-status name="status" { @for t in ["active", "suspended", "revoked"] { option value=(t) selected[selected("status", t)] { (t) } } } (err("status")) }
                        div { label for="f-model" { "Seat model" }
                            select #f-model name="seat_model" { @for t in ["dedicated", "concurrent"] { option value=(t) selected[selected("seat_model", t)] { (t) } } } (err("seat_model")) }
                        div { label for="f-seats" { "Seats total" } input #f-seats name="seats_total" inputmode="numeric" value=(value("seats_total")) required; (err("seats_total")) }
                        div { label for="f-version" { "Version" } input #f-version name="version" value=(value("version")); (err("version")) }
                        div { label for="f-cost" { "Cost (in the workspace currency, e.g. 1299.00)" } input #f-cost name="cost" inputmode="decimal" value=(value("cost")); (err("cost")) }
                        div { label for="f-bought" { "Purchase date" } input #f-bought name="purchased_on" type="date" value=(value("purchased_on")); (err("purchased_on")) }
                        div { label for="f-expires" { "Expiry date" } input #f-expires name="expires_on" type="date" value=(value("expires_on")); (err("expires_on")) }
                        div { label for="f-maint" { "Maintenance expiry date" } input #f-maint name="maintenance_expires_on" type="date" value=(value("maintenance_expires_on")); (err("maintenance_expires_on")) }
                        div { label for="f-po" { "PO number" } input #f-po name="po_number" value=(value("po_number")); (err("po_number")) }
                        div { label for="f-ttl" { "Lease TTL (seconds)" } input #f-ttl name="lease_ttl_s" inputmode="numeric" value=(value("lease_ttl_s")); (err("policy.lease_ttl_s")) }
                        div { label for="f-queue" { "Wait queue when full (floating)" }
                            select #f-queue name="queue" {
                                option value="fifo" selected[!selected("queue", "off")] { "fifo: first come, first served (default)" }
                                option value="off" selected[selected("queue", "off")] { "off: refuse at once" }
                            } (err("policy.queue")) }
                        div { label for="f-queue-ttl" { "Queue place kept without asking (seconds)" } input #f-queue-ttl name="queue_ttl_s" inputmode="numeric" placeholder="60 (default)" value=(value("queue_ttl_s")); (err("policy.queue_ttl_s")) }
                        div { label for="f-idle" { "Idle after (seconds unused; blank: never, the default)" } input #f-idle name="idle_timeout_s" inputmode="numeric" placeholder="never (default)" value=(value("idle_timeout_s")); (err("policy.idle_timeout_s")) }
                        div { label for="f-idle-reclaim" { "Idle seats are released" }
                            select #f-idle-reclaim name="idle_reclaim" {
                                option value="when_needed" selected[!selected("idle_reclaim", "always")] { "when needed: only for someone waiting (default)" }
                                option value="always" selected[selected("idle_reclaim", "always")] { "always: as soon as they are idle" }
                            } (err("policy.idle_reclaim")) }
                        div { label for="f-borrow-days" { "Borrow for offline use, at most (days; 0: off, the default)" } input #f-borrow-days name="max_borrow_days" inputmode="numeric" placeholder="0 (default)" value=(value("max_borrow_days")); (err("policy.max_borrow_days")) }
                        div { label for="f-borrowed" { "Seats out on borrow at once (blank: any, the default)" } input #f-borrowed name="max_borrowed_seats" inputmode="numeric" placeholder="any (default)" value=(value("max_borrowed_seats")); (err("policy.max_borrowed_seats")) }
                    }
                    label for="f-notes" { "Notes" } textarea #f-notes name="notes" rows="3" { (value("notes")) } (err("notes"))
                    p { button.primary type="submit" { "Save license" } }
                }
            },
        ),
    )
}

/// Turns the form into the API's JSON shape, so the API's validation (and its field
/// names) apply; `for_update` sends blanks as nulls, to clear.
fn license_json(
    form: &FormData,
    currency: &str,
    for_update: bool,
) -> Result<Map<String, Value>, (String, String)> {
    let mut body = Map::new();
    let text = |k: &str| {
        form.get(k)
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    for key in [
        "key",
        "licensed_to",
        "vendor",
        "type",
        "status",
        "seat_model",
        "version",
        "purchased_on",
        "expires_on",
        "maintenance_expires_on",
        "po_number",
        "notes",
        "application_id",
    ] {
        if for_update && (key == "key" || key == "application_id") {
            continue;
        }
        let value = text(key);
        if !value.is_empty() {
            body.insert(key.into(), json!(value));
        } else if for_update && !matches!(key, "licensed_to" | "type" | "status" | "seat_model") {
            body.insert(key.into(), Value::Null);
        }
    }
    let seats = text("seats_total");
    if !seats.is_empty() || !for_update {
        let seats: i64 = seats.parse().map_err(|_| {
            (
                "seats_total".to_string(),
                "must be a whole number".to_string(),
            )
        })?;
        body.insert("seats_total".into(), json!(seats));
    }
    let cost = text("cost");
    if cost.is_empty() {
        if for_update {
            body.insert("cost".into(), Value::Null);
        }
    } else {
        let minor = parse_money(&cost).ok_or((
            "cost".to_string(),
            "must be an amount such as 1299.00".to_string(),
        ))?;
        body.insert(
            "cost".into(),
            json!({"amount_minor": minor, "currency": currency}),
        );
    }
    let mut policy = serde_json::Map::new();
    for key in ["lease_ttl_s", "queue_ttl_s"] {
        let seconds = text(key);
        if !seconds.is_empty() {
            let seconds: i64 = seconds.parse().map_err(|_| {
                (
                    format!("policy.{key}"),
                    "must be a whole number of seconds".to_string(),
                )
            })?;
            policy.insert(key.into(), json!(seconds));
        }
    }
    let days = text("max_borrow_days");
    if !days.is_empty() {
        let days: i64 = days.parse().map_err(|_| {
            (
                "policy.max_borrow_days".to_string(),
                "must be a whole number of days".to_string(),
            )
        })?;
        policy.insert("max_borrow_days".into(), json!(days));
    }
    // Blank means "none" for these: cleared on an edit.
    for (key, unit) in [
        ("idle_timeout_s", "seconds, or blank for never"),
        ("max_borrowed_seats", "seats, or blank for any"),
    ] {
        let number = text(key);
        if !number.is_empty() {
            let number: i64 = number.parse().map_err(|_| {
                (
                    format!("policy.{key}"),
                    format!("must be a whole number of {unit}"),
                )
            })?;
            policy.insert(key.into(), json!(number));
        } else if for_update {
            policy.insert(key.into(), Value::Null);
        }
    }
    for key in ["queue", "idle_reclaim"] {
        let choice = text(key);
        if !choice.is_empty() {
            policy.insert(key.into(), json!(choice));
        }
    }
    if !policy.is_empty() {
        body.insert("policy".into(), Value::Object(policy));
    }
    Ok(body)
}

/// "1299.5" → 129950 minor units (two decimals). Digits only: a cost is never negative,
/// and "-0.50" must not come out as 50.
fn parse_money(text: &str) -> Option<i64> {
    let text = text.replace(',', "");
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if fraction.len() > 2
        || whole.is_empty() && fraction.is_empty()
        || !digits(whole)
        || !digits(fraction)
    {
        return None;
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let fraction: i64 = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<2}").parse().ok()?
    };
    whole.checked_mul(100)?.checked_add(fraction)
}

/// The license form read into the API's JSON body (`update`: a change, where an empty
/// field clears it), or the first bad field and why.
pub(super) fn read_license_form<T: serde::de::DeserializeOwned>(
    form: &FormData,
    currency: &str,
    update: bool,
) -> Result<T, (String, String)> {
    let body = license_json(form, currency, update)?;
    crate::extract::parse_json(Value::Object(body).to_string().as_bytes())
        .map_err(|error| (field_of(&error), error.message))
}

/// A refusal the form shows next to its field (a bad field or a conflict), or `None`
/// for one that is a page of its own.
pub(super) fn form_error(error: &ApiError) -> Option<(String, String)> {
    (error.status == StatusCode::BAD_REQUEST || error.status == StatusCode::CONFLICT)
        .then(|| (field_of(error), error.message.clone()))
}

fn field_of(error: &ApiError) -> String {
    error
        .details
        .as_ref()
        .and_then(|d| d.get("field"))
        .and_then(|f| f.as_str())
        .unwrap_or("form")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::{license_json, parse_money};
    use serde_json::json;

    #[test]
    fn the_policy_fields_go_into_the_policy_object() {
        let form = [
            ("lease_ttl_s", "120"),
            ("queue", "off"),
            ("queue_ttl_s", " 30 "),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let body = license_json(&form, "USD", true).expect("a valid form");
        assert_eq!(
            body["policy"],
            json!({"lease_ttl_s": 120, "queue": "off", "queue_ttl_s": 30, "idle_timeout_s": null,
                "max_borrowed_seats": null})
        );
        let form = [
            ("idle_timeout_s", "600"),
            ("idle_reclaim", "always"),
            ("max_borrow_days", "7"),
            ("max_borrowed_seats", "2"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let body = license_json(&form, "USD", true).expect("a valid form");
        assert_eq!(
            body["policy"],
            json!({"idle_timeout_s": 600, "idle_reclaim": "always", "max_borrow_days": 7,
                "max_borrowed_seats": 2})
        );
        let form = [("queue_ttl_s", "soon")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let refused = license_json(&form, "USD", true).expect_err("not a number");
        assert_eq!(refused.0, "policy.queue_ttl_s");
    }

    #[test]
    fn money_is_read_into_minor_units() {
        assert_eq!(parse_money("1299.5"), Some(129950));
        assert_eq!(parse_money("1,299.05"), Some(129905));
        assert_eq!(parse_money("12"), Some(1200));
        assert_eq!(parse_money("1.234"), None);
        assert_eq!(parse_money("abc"), None);
        assert_eq!(parse_money(".5"), Some(50));
        // Signs anywhere are refused, not folded into a positive amount.
        assert_eq!(parse_money("-0.50"), None);
        assert_eq!(parse_money("-1.50"), None);
        assert_eq!(parse_money("+12"), None);
        assert_eq!(parse_money("1.-5"), None);
    }

    proptest::proptest! {
        #[test]
        fn any_text_reads_as_money_or_nothing_without_a_panic(text in "\\PC{0,40}") {
            if let Some(minor) = parse_money(&text) {
                proptest::prop_assert!(minor >= 0);
            }
        }

        #[test]
        fn an_amount_written_with_two_decimals_reads_back(minor in 0i64..=i64::MAX / 100) {
            let text = format!("{}.{:02}", minor / 100, minor % 100);
            proptest::prop_assert_eq!(parse_money(&text), Some(minor));
        }
    }
}
