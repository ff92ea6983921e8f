//! Usage against cost (DESIGN §8): a license's last 30 days as an inline SVG chart drawn
//! by the server (no script), and the `/usage` page: every license's use against what was
//! bought, with the renewal advice, the most money at stake first, and a CSV download.

use super::view::{self, page};
use super::ConsoleSession;
use crate::AppState;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use leasehold_core::usage::{AdviceAction, DAY_MS};
use leasehold_core::{BucketSize, Permission};
use leasehold_store::{UsageReport, UsageSummaryItem};
use maud::{html, Markup};
use serde::Deserialize;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/usage", get(usage_page))
        .route("/usage/export", get(usage_export))
}

/// The days a license page's chart shows.
pub(super) const CHART_DAYS: i64 = 30;

/// A license's last [`CHART_DAYS`] days, by day, up to now.
pub(super) async fn last_days(
    state: &AppState,
    workspace_id: &str,
    license_id: &str,
) -> leasehold_store::Result<UsageReport> {
    let now = chrono::Utc::now().timestamp_millis();
    let today = leasehold_core::usage::day_of(now);
    let range = (today - (CHART_DAYS - 1) * DAY_MS, today + DAY_MS);
    state
        .store
        .usage(workspace_id, license_id, range, BucketSize::Day, now)
        .await
}

// The chart's frame, in SVG units (it scales to the page's width).
const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 250.0;
const LEFT: f64 = 36.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 58.0;

/// The chart: each day's peak in use as a bar, the seats bought as a dashed line, and a
/// mark above the days someone was refused; axes with their figures, and a legend.
pub(super) fn usage_chart(report: &UsageReport) -> Markup {
    let items = &report.items;
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let top = items
        .iter()
        .map(|b| b.peak_in_use)
        .max()
        .unwrap_or(0)
        .max(report.seats_total)
        .max(1);
    let y = |v: i64| TOP + plot_h - plot_h * v as f64 / top as f64;
    let slot = plot_w / items.len().max(1) as f64;
    let bar = (slot * 0.7).max(1.0);
    let day = |start: i64| view::day_label(start);
    let bought_y = y(report.seats_total);
    let refused = items.iter().filter(|b| b.denials.unwrap_or(0) > 0).count();
    html! {
        svg #usage-chart viewBox={"0 0 " (WIDTH) " " (HEIGHT)} role="img" preserveAspectRatio="xMidYMid meet"
            aria-labelledby="usage-chart-title" style="width:100%;height:auto;max-width:56rem" {
            title #usage-chart-title { "Peak seats in use per day, last " (items.len()) " days, against "
                (report.seats_total) " bought; " (refused) " days with refusals" }
            // Axes and the y figures: 0, half, the top.
            line x1=(LEFT) y1=(TOP) x2=(LEFT) y2=(TOP + plot_h) stroke="#64748b" {}
            line x1=(LEFT) y1=(TOP + plot_h) x2=(LEFT + plot_w) y2=(TOP + plot_h) stroke="#64748b" {}
            @for v in [0, top / 2, top] {
                text x=(LEFT - 4.0) y=(y(v) + 4.0) text-anchor="end" font-size="11" fill="#334155" { (v) }
            }
            // The bars, one per day, with the day's figures on hover.
            @for (n, b) in items.iter().enumerate() {
                @let x = LEFT + slot * n as f64 + (slot - bar) / 2.0;
                rect.bar x=(x) y=(y(b.peak_in_use)) width=(bar) height=(TOP + plot_h - y(b.peak_in_use))
                    fill="#2563eb" data-day=(day(b.start)) {
                    title { (day(b.start)) ": peak " (b.peak_in_use) " of " (report.seats_total)
                        @if let Some(denials) = b.denials { ", " (denials) " refused" } }
                }
                @if b.denials.unwrap_or(0) > 0 {
                    @let cx = x + bar / 2.0;
                    polygon.refused points={(cx - 4.0) "," (TOP + 1.0) " " (cx + 4.0) "," (TOP + 1.0) " " (cx) "," (TOP + 8.0)}
                        fill="#dc2626" { title { (day(b.start)) ": " (b.denials.unwrap_or(0)) " refused" } }
                }
                // A date under the last day, and every seventh before it.
                @if (items.len() - 1 - n).is_multiple_of(7) {
                    text x=(x + bar / 2.0) y=(TOP + plot_h + 14.0) text-anchor="middle" font-size="10" fill="#334155" {
                        (view::short_day_label(b.start)) }
                }
            }
            line.bought x1=(LEFT) y1=(bought_y) x2=(LEFT + plot_w) y2=(bought_y) stroke="#dc2626"
                stroke-dasharray="6 4" stroke-width="1.5" {}
            // The legend.
            @let ly = HEIGHT - 18.0;
            rect x=(LEFT) y=(ly - 9.0) width="12" height="10" fill="#2563eb" {}
            text x=(LEFT + 16.0) y=(ly) font-size="11" fill="#334155" { "peak in use" }
            line x1=(LEFT + 110.0) y1=(ly - 4.0) x2=(LEFT + 132.0) y2=(ly - 4.0) stroke="#dc2626" stroke-dasharray="6 4" stroke-width="1.5" {}
            text x=(LEFT + 136.0) y=(ly) font-size="11" fill="#334155" { "seats bought (" (report.seats_total) ")" }
            polygon points={(LEFT + 262.0) "," (ly - 9.0) " " (LEFT + 270.0) "," (ly - 9.0) " " (LEFT + 266.0) "," (ly - 2.0)} fill="#dc2626" {}
            text x=(LEFT + 276.0) y=(ly) font-size="11" fill="#334155" { "someone was refused" }
        }
    }
}

#[derive(Debug, Deserialize)]
struct Period {
    days: Option<i64>,
}

/// The periods the page offers; anything else is read as the default.
const PERIODS: [i64; 3] = [30, 90, 365];

fn period(query: &Period) -> i64 {
    query.days.filter(|d| PERIODS.contains(d)).unwrap_or(90)
}

/// The summary over the period asked for, for the page and its CSV.
async fn summary(
    state: &AppState,
    session: &ConsoleSession,
    query: &Period,
) -> Result<(i64, Vec<UsageSummaryItem>), crate::error::ApiError> {
    session.principal.require(Permission::LicenseView)?;
    let days = period(query);
    let now = chrono::Utc::now().timestamp_millis();
    let items = state
        .store
        .usage_summary(&session.principal.workspace_id, days, now)
        .await?;
    Ok((days, items))
}

async fn usage_page(
    State(state): State<AppState>,
    session: ConsoleSession,
    Query(query): Query<Period>,
) -> Response {
    let (days, items) = tri!(session, summary(&state, &session, &query).await);
    page(
        "Usage",
        Some(&session),
        html! {
            h1 { "Usage against cost" }
            p.muted { "What each license used over the period against what was bought, and what to do at renewal. The most money at stake first." }
            p #periods { "Period: "
                @for d in PERIODS {
                    @if d == days { strong aria-current="page" { (d) " days" } } @else { a href={"/usage?days=" (d)} { (d) " days" } }
                    " "
                }
                " · " a #usage-csv href={"/usage/export?days=" (days)} download { "Download CSV" }
            }
            @if items.is_empty() { p { "No licenses yet." } } @else {
                div.table-wrap { table #usage {
                    thead { tr { th { "License" } th { "Peak / bought" } th { "p95" } th { "Use" } th { "Refused" }
                        th { "Cost" } th { "Expires" } th { "Advice" } th { "At stake" } } }
                    tbody {
                        @for i in &items { (summary_row(i)) }
                    }
                } }
            }
        },
    )
}

fn summary_row(i: &UsageSummaryItem) -> Markup {
    let (badge, verb) = match i.advice.action {
        AdviceAction::Reduce => ("badge reduce", "reduce to"),
        AdviceAction::Increase => ("badge increase", "increase to"),
        AdviceAction::Keep => ("badge keep", "keep"),
    };
    let currency = i.cost.as_ref().map(|c| c.currency.as_str());
    html! {
        tr data-license=(i.license_id) {
            td { a href={"/licenses/" (i.license_id) "#usage"} { (i.licensed_to) } br; span.muted { (i.seat_model.as_str()) } }
            td { (i.peak_in_use) " / " (i.seats_total) }
            td { (i.p95_in_use) }
            td { (format!("{:.0}%", i.utilisation * 100.0)) }
            td { (i.denials) @if i.denied_holders > 0 { " (" (i.denied_holders) " people)" } }
            td { (view::money(i.cost.as_ref().map(|c| c.amount_minor), currency)) }
            td { @if let Some(d) = i.expires_on { (d) } @else { "—" } }
            td.advice { span class=(badge) { (verb) @if i.advice.action != AdviceAction::Keep { " " (i.advice.seats) } }
                br; span.muted { (i.advice.reason) } }
            td { @if i.at_stake_minor > 0 { (view::money(Some(i.at_stake_minor), currency)) } @else { "—" } }
        }
    }
}

/// The summary as CSV, for the console's download (the API's `format=csv`).
async fn usage_export(
    State(state): State<AppState>,
    session: ConsoleSession,
    Query(query): Query<Period>,
) -> Response {
    let (days, items) = tri!(session, summary(&state, &session, &query).await);
    match crate::api::summary_csv(days, items) {
        Ok(response) => response,
        Err(error) => super::failed(&session, error),
    }
}
