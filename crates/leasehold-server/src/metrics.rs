//! Prometheus metrics at `GET /metrics` (DESIGN §10), in the text format, without
//! authentication (like `/healthz`), or on their own listener (`--metrics-listen`).
//!
//! Counters and histograms go through the `metrics` facade as things happen (requests by
//! route template and status, their latency, checkouts denied by reason, sweeper runs,
//! the SQLite writer's batches and fsyncs), rendered by `metrics-exporter-prometheus`.
//! What the store knows (seats per license, the queue, the outbox) is read when scraped,
//! so it is current and a license that stops being among the busiest leaves no stale
//! series behind.

use crate::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::Instant;

/// How many licenses (the most seats in use first) have their own seat gauges: the
/// series stay bounded however many licenses there are.
pub const TOP_LICENSES: i64 = 50;

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// The process's recorder (one per process, made on first use).
fn handle() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .ok()?
                .set_buckets_for_metric(
                    Matcher::Full("leasehold_sqlite_batch_size".into()),
                    BATCH_BUCKETS,
                )
                .ok()?;
            match builder.install_recorder() {
                Ok(handle) => Some(handle),
                Err(error) => {
                    tracing::warn!(%error, "the metrics recorder could not be installed");
                    None
                }
            }
        })
        .as_ref()
}

/// Starts recording (before the first request, so that nothing is missed), and keeps
/// the recorder's memory bounded whether or not anyone scrapes: histogram samples are
/// folded into their buckets every few seconds.
pub fn install() -> Option<tokio::task::JoinHandle<()>> {
    let handle = handle()?;
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tick.tick().await;
            handle.run_upkeep();
        }
    }))
}

/// A method as a label: one of a fixed set (any token is a method to HTTP, and each
/// label value is a series).
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Counts a request and its latency by route template (never the raw path: ids would
/// make a series each) and status.
pub async fn track(request: Request, next: Next) -> Response {
    let route = route_of(request.extensions().get::<MatchedPath>());
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!("leasehold_http_request_duration_seconds", "route" => route, "method" => method)
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("leasehold_http_requests_total", "route" => route, "method" => method, "status" => status)
        .increment(1);
    response
}

fn route_of(matched: Option<&MatchedPath>) -> &'static str {
    let Some(path) = matched.map(MatchedPath::as_str) else {
        return "unmatched";
    };
    if path.starts_with("/keygen") {
        return "/keygen";
    }
    // Route templates are few and fixed (the router's own): each is leaked once, as a
    // `'static` label, and read without contention after.
    static ROUTES: OnceLock<std::sync::RwLock<std::collections::HashMap<String, &'static str>>> =
        OnceLock::new();
    let routes = ROUTES.get_or_init(Default::default);
    if let Some(route) = routes.read().ok().and_then(|r| r.get(path).copied()) {
        return route;
    }
    let Ok(mut routes) = routes.write() else {
        return "unmatched";
    };
    routes
        .entry(path.to_string())
        .or_insert_with(|| Box::leak(path.to_string().into_boxed_str()))
}

/// The refusals of a seat that `leasehold_checkouts_denied_total` counts, by code.
const DENIALS: &[&str] = &[
    "NO_SEATS",
    "RELEASE_COOLDOWN",
    "RELEASE_LIMIT",
    "INSTANCE_LIMIT",
    "BORROW_LIMIT",
    "BORROW_NOT_ALLOWED",
    "SUSPENDED",
    "REVOKED",
    "EXPIRED",
];

/// Counts a client's refusal, when it denied a seat.
pub fn denied(code: &'static str) {
    if DENIALS.contains(&code) {
        metrics::counter!("leasehold_checkouts_denied_total", "reason" => code).increment(1);
    }
}

/// A sweeper pass and the leases it ended.
pub fn swept(expired: u64) {
    metrics::counter!("leasehold_sweeper_runs_total").increment(1);
    metrics::counter!("leasehold_leases_expired_total").increment(expired);
}

/// `GET /metrics`.
pub async fn page(State(state): State<AppState>) -> Response {
    let Some(handle) = handle() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics are not recorded\n",
        )
            .into_response();
    };
    let mut text = handle.render();
    match snapshot(&state).await {
        Ok(snapshot) => write_snapshot(&mut text, &snapshot, state.metrics_per_license),
        Err(error) => tracing::warn!(%error, "reading the store's metrics failed"),
    }
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// The store's figures `/metrics` read last, and when.
pub type SnapshotCache = tokio::sync::Mutex<Option<(Instant, leasehold_store::MetricsSnapshot)>>;

/// How long a read of the store's figures answers scrapes (a scrape is unauthenticated:
/// however often it comes, the store is read at most this often).
const SNAPSHOT_FOR: std::time::Duration = std::time::Duration::from_secs(2);

async fn snapshot(state: &AppState) -> leasehold_store::Result<leasehold_store::MetricsSnapshot> {
    let mut cached = state.metrics_cache.lock().await;
    if let Some((at, snapshot)) = cached.as_ref() {
        if at.elapsed() < SNAPSHOT_FOR {
            return Ok(snapshot.clone());
        }
    }
    let snapshot = state.store.metrics_snapshot(TOP_LICENSES).await?;
    *cached = Some((Instant::now(), snapshot.clone()));
    Ok(snapshot)
}

/// `per_license`: the busiest licenses' own series too (their ids and workspaces'; an
/// operator's choice, `--metrics-per-license`, as `/metrics` needs no authentication).
fn write_snapshot(
    text: &mut String,
    snapshot: &leasehold_store::MetricsSnapshot,
    per_license: bool,
) {
    let mut gauge = |name: &str, help: &str, rows: Vec<(String, i64)>| {
        let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, value) in rows {
            let _ = writeln!(text, "{name}{labels} {value}");
        }
    };
    let license = |l: &leasehold_store::LicenseSeatsRow| {
        format!(
            "{{license=\"{}\",workspace=\"{}\"}}",
            escape(&l.license_id),
            escape(&l.workspace_id)
        )
    };
    if per_license {
        gauge(
            "leasehold_license_seats_used",
            "Seats in use, for the licenses with the most in use",
            snapshot
                .licenses
                .iter()
                .map(|l| (license(l), l.seats_used))
                .collect(),
        );
        gauge(
            "leasehold_license_seats_total",
            "Seats bought, for the licenses with the most in use",
            snapshot
                .licenses
                .iter()
                .map(|l| (license(l), l.seats_total))
                .collect(),
        );
    }
    gauge(
        "leasehold_seats_used",
        "Seats in use, all licenses",
        vec![(String::new(), snapshot.seats_used)],
    );
    gauge(
        "leasehold_seats_total",
        "Seats bought, all licenses in force",
        vec![(String::new(), snapshot.seats_total)],
    );
    gauge(
        "leasehold_queue_waiting",
        "Holders waiting in a license's queue for a seat",
        vec![(String::new(), snapshot.waiting)],
    );
    gauge(
        "leasehold_outbox_messages",
        "Webhook and email deliveries pending or failed",
        snapshot
            .outbox
            .iter()
            .map(|(channel, state, count)| {
                (
                    format!(
                        "{{channel=\"{}\",state=\"{}\"}}",
                        escape(channel),
                        escape(state)
                    ),
                    *count,
                )
            })
            .collect(),
    );
}

/// A label value as Prometheus reads it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
