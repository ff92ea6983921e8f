//! `GET /metrics` (DESIGN §10): Prometheus text with requests by route and status,
//! latency histograms, seats per license, denials by reason, the queue, the outbox, the
//! sweeper and the SQLite writer; on its own listener with `--metrics-listen`.

use crate::harness::{eventually, id, Backend, ServerProcess, TestServer};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_known_traffic_sqlite() {
    with_per_license_metrics(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_known_traffic_postgres() {
    with_per_license_metrics(Backend::Postgres).await;
}

async fn with_per_license_metrics(backend: Backend) {
    let s = TestServer::start_with(backend, |settings| settings.metrics_per_license = true).await;
    metrics_tell_requests_seats_denials_and_the_queue_after_known_traffic(&s).await;
    s.stop().await;
}

/// The value of the first sample of `name` whose labels include all of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .find(|line| labels.iter().all(|label| line.contains(label)))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

async fn scrape(base: &str) -> String {
    let response = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    response.text().await.unwrap()
}

async fn metrics_tell_requests_seats_denials_and_the_queue_after_known_traffic(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let license = admin
        .license_with(
            json!({"seat_model": "concurrent", "seats_total": 2, "policy": {"queue": "fifo"}}),
        )
        .await;
    let (lid, key) = (id(&license), license["key"].as_str().unwrap().to_string());
    let c = s.anonymous();
    for machine in ["a", "b", "c"] {
        c.post(
            "/v1/client/leases",
            json!({"key": key, "fingerprint": machine, "os_user": "u", "instance": "1", "queue": true}),
        )
        .await;
    }
    let text = scrape(&s.base).await;
    let license_label = format!("license=\"{lid}\"");
    assert_eq!(
        sample(&text, "leasehold_license_seats_used", &[&license_label]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "leasehold_license_seats_total", &[&license_label]),
        Some(2.0)
    );
    assert_eq!(sample(&text, "leasehold_seats_used", &[]), Some(2.0));
    // The third machine was refused and waits in the queue.
    assert!(
        sample(
            &text,
            "leasehold_checkouts_denied_total",
            &["reason=\"NO_SEATS\""]
        )
        .unwrap()
            >= 1.0
    );
    assert_eq!(sample(&text, "leasehold_queue_waiting", &[]), Some(1.0));
    // Requests by route template and status, with their latency.
    let route = "route=\"/v1/client/leases\"";
    assert!(
        sample(
            &text,
            "leasehold_http_requests_total",
            &[route, "status=\"201\""]
        )
        .unwrap()
            >= 2.0
    );
    assert!(
        sample(
            &text,
            "leasehold_http_requests_total",
            &[route, "status=\"409\""]
        )
        .unwrap()
            >= 1.0
    );
    assert!(
        sample(
            &text,
            "leasehold_http_request_duration_seconds_count",
            &[route]
        )
        .unwrap()
            >= 3.0
    );
    assert!(text.contains("leasehold_http_request_duration_seconds_bucket{"));
    // Deliveries pending or failed, whether or not there are any.
    for series in [
        "channel=\"webhook\",state=\"pending\"",
        "channel=\"email\",state=\"failed\"",
    ] {
        assert!(
            sample(&text, "leasehold_outbox_messages", &[series]).is_some(),
            "{series}"
        );
    }
    // The sweeper runs every second; the SQLite writer reports its batches and fsyncs.
    let swept = eventually(30, || async {
        sample(&scrape(&s.base).await, "leasehold_sweeper_runs_total", &[]).is_some()
    })
    .await;
    assert!(swept, "no sweeper run counted");
    if s.backend == Backend::Sqlite {
        let text = scrape(&s.base).await;
        assert!(sample(&text, "leasehold_sqlite_batch_size_count", &[]).unwrap() >= 1.0);
        assert!(sample(&text, "leasehold_sqlite_fsync_seconds_count", &[]).unwrap() >= 1.0);
    }
    // Ids never become labels of request series.
    assert!(!text.contains(&format!("route=\"/v1/licenses/{lid}")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_metrics_listen_metrics_are_off_the_public_listener() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let args = vec![
        "--data-dir".to_string(),
        dir.path().display().to_string(),
        "--metrics-listen".to_string(),
        format!("127.0.0.1:{port}"),
    ];
    let server = ServerProcess::start(&args).await;
    let public = reqwest::get(format!("{}/metrics", server.base))
        .await
        .unwrap();
    assert_eq!(public.status(), StatusCode::NOT_FOUND);
    let private = format!("http://127.0.0.1:{port}");
    let up = eventually(30, || async {
        reqwest::get(format!("{private}/metrics"))
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
    assert!(up, "the metrics listener does not answer");
    let text = scrape(&private).await;
    assert!(text.contains("leasehold_seats_used"), "{text}");
    // No license's own series unless asked for (`/metrics` needs no authentication).
    assert!(!text.contains("leasehold_license_seats_used"), "{text}");
}
