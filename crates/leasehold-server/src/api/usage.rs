//! Usage analytics (DESIGN §8): a license's hours or days, and the workspace's summary
//! with the renewal advice, as JSON or CSV (`?format=csv`).

use crate::convert;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiQuery, Principal};
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::NaiveDate;
use leasehold_core::usage::DAY_MS;
use leasehold_core::{BucketSize, Permission};
use leasehold_proto::{ErrorBody, LicenseUsage, UsageItem, UsageSummary};
use serde::Deserialize;

/// The longest range a usage answer covers, in days (13 months of buckets are kept).
const MAX_DAYS: i64 = 400;
/// The range when none is asked for: the last 30 days, today included.
const DEFAULT_DAYS: i64 = 30;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    bucket: Option<BucketSize>,
    format: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SummaryQuery {
    days: Option<i64>,
    format: Option<String>,
}

/// Whether the caller asked for CSV (`format=csv`) rather than JSON (the default).
fn wants_csv(format: Option<&str>) -> ApiResult<bool> {
    match format {
        None | Some("json") => Ok(false),
        Some("csv") => Ok(true),
        Some(_) => Err(ApiError::invalid("format", "must be json or csv")),
    }
}

fn day_start(day: NaiveDate) -> i64 {
    day.and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp_millis())
        .unwrap_or(0)
}

/// A CSV answer: the header row, then the rows.
fn csv_answer(name: &str, header: &[&str], rows: Vec<Vec<String>>) -> ApiResult<Response> {
    let mut out = csv::Writer::from_writer(Vec::new());
    let failed = |_| ApiError::internal();
    out.write_record(header).map_err(failed)?;
    for row in rows {
        out.write_record(&row).map_err(failed)?;
    }
    let body = out.into_inner().map_err(|_| ApiError::internal())?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}.csv\""),
            ),
        ],
        body,
    )
        .into_response())
}

fn or_blank<T: ToString>(value: Option<T>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

/// A license's usage, hour by hour or day by day, from `from` to `to` (inclusive days,
/// UTC; the last 30 days by default), up to now.
#[utoipa::path(get, path = "/v1/licenses/{id}/usage", tag = "usage", security(("bearer" = [])),
    params(("id" = String, Path),
        ("from" = Option<String>, Query, description = "First day, YYYY-MM-DD"),
        ("to" = Option<String>, Query, description = "Last day, YYYY-MM-DD (inclusive)"),
        ("bucket" = Option<String>, Query, description = "`hour` or `day` (default)"),
        ("format" = Option<String>, Query, description = "`json` (default) or `csv`")),
    responses((status = 200, body = LicenseUsage, description = "JSON, or CSV with `format=csv`"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn license_usage(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<UsageQuery>,
) -> ApiResult<Response> {
    principal.require(Permission::LicenseView)?;
    let csv = wants_csv(query.format.as_deref())?;
    let today = leasehold_store::today();
    let to = query.to.unwrap_or(today);
    let from = match query.from {
        Some(from) => from,
        None => to
            .checked_sub_signed(chrono::Duration::days(DEFAULT_DAYS - 1))
            .ok_or_else(|| ApiError::invalid("to", "is out of range"))?,
    };
    if from > to {
        return Err(ApiError::invalid("from", "must not be after to"));
    }
    if (to - from).num_days() >= MAX_DAYS {
        return Err(ApiError::invalid(
            "from",
            format!("the range is at most {MAX_DAYS} days"),
        ));
    }
    let size = query.bucket.unwrap_or(BucketSize::Day);
    let now = chrono::Utc::now().timestamp_millis();
    let range = (day_start(from), day_start(to) + DAY_MS);
    let report = state
        .store
        .usage(&principal.workspace_id, &id, range, size, now)
        .await?;
    let answer = LicenseUsage {
        license_id: report.license_id,
        seats_total: report.seats_total,
        bucket: report.bucket,
        denials_counted_since: convert::time(report.denials_counted_since),
        items: report
            .items
            .into_iter()
            .map(|b| UsageItem {
                start: convert::time(b.start),
                peak_in_use: b.peak_in_use,
                avg_in_use: b.avg_in_use,
                denials: b.denials,
                denied_holders: b.denied_holders,
                peak_queued: b.peak_queued,
                holders: b.holders,
            })
            .collect(),
    };
    if !csv {
        return Ok(Json(answer).into_response());
    }
    let rows = answer
        .items
        .iter()
        .map(|b| {
            vec![
                answer.license_id.clone(),
                b.start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                b.peak_in_use.to_string(),
                b.avg_in_use.to_string(),
                or_blank(b.denials),
                or_blank(b.denied_holders),
                b.peak_queued.to_string(),
                b.holders.to_string(),
            ]
        })
        .collect();
    csv_answer(
        &format!("usage-{}", answer.license_id),
        &[
            "license_id",
            "start",
            "peak_in_use",
            "avg_in_use",
            "denials",
            "denied_holders",
            "peak_queued",
            "holders",
        ],
        rows,
    )
}

/// Every license's use over the last `days` days (90 by default, today included) against
/// what was bought, with the renewal advice; the most money at stake first.
#[utoipa::path(get, path = "/v1/usage/summary", tag = "usage", security(("bearer" = [])),
    params(("days" = Option<i64>, Query, description = "1 to 400 (default 90)"),
        ("format" = Option<String>, Query, description = "`json` (default) or `csv`")),
    responses((status = 200, body = UsageSummary, description = "JSON, or CSV with `format=csv`"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub async fn usage_summary(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<SummaryQuery>,
) -> ApiResult<Response> {
    principal.require(Permission::LicenseView)?;
    let csv = wants_csv(query.format.as_deref())?;
    let days = query.days.unwrap_or(90);
    if !(1..=MAX_DAYS).contains(&days) {
        return Err(ApiError::invalid(
            "days",
            format!("must be between 1 and {MAX_DAYS}"),
        ));
    }
    let now = chrono::Utc::now().timestamp_millis();
    let items = state
        .store
        .usage_summary(&principal.workspace_id, days, now)
        .await?;
    if csv {
        return summary_csv(days, items);
    }
    let answer = UsageSummary { days, items };
    Ok(Json(answer).into_response())
}

/// The summary as CSV: a header row naming the fields as in JSON (the cost's and the
/// advice's flattened), one row per license.
pub(crate) fn summary_csv(
    days: i64,
    items: Vec<leasehold_store::UsageSummaryItem>,
) -> ApiResult<Response> {
    let rows = items
        .iter()
        .map(|i| {
            vec![
                i.license_id.clone(),
                i.application_id.clone(),
                i.licensed_to.clone(),
                i.seat_model.as_str().to_string(),
                i.seats_total.to_string(),
                i.peak_in_use.to_string(),
                i.p95_in_use.to_string(),
                i.avg_in_use.to_string(),
                i.denials.to_string(),
                i.denied_holders.to_string(),
                i.utilisation.to_string(),
                or_blank(i.cost.as_ref().map(|c| c.amount_minor)),
                or_blank(i.cost.as_ref().map(|c| c.currency.clone())),
                or_blank(i.expires_on),
                serde_json::to_value(i.advice.action)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
                i.advice.seats.to_string(),
                i.advice.reason.clone(),
                i.at_stake_minor.to_string(),
            ]
        })
        .collect();
    csv_answer(
        &format!("usage-summary-{days}d"),
        &[
            "license_id",
            "application_id",
            "licensed_to",
            "seat_model",
            "seats_total",
            "peak_in_use",
            "p95_in_use",
            "avg_in_use",
            "denials",
            "denied_holders",
            "utilisation",
            "cost_amount_minor",
            "cost_currency",
            "expires_on",
            "advice_action",
            "advice_seats",
            "advice_reason",
            "at_stake_minor",
        ],
        rows,
    )
}
