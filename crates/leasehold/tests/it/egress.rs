//! Webhooks go to public addresses only (DESIGN §11), whatever a name resolves to at
//! delivery time, and never through the environment's proxy.
//!
//! No test here sends a packet past loopback, even on a broken build: names resolve
//! through a test resolver (the server's `Lookup` seam) that gives them addresses of each
//! class, and routes every connection the guard lets through to a sink on 127.0.0.1. A
//! refusal the guard failed to make shows up as a request at the sink.

use crate::harness::{id, Api, Backend, TestServer};
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use leasehold_server::egress::Lookup;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The names the tests resolve, by the address class they stand for.
const NAMES: &[(&str, &[&str])] = &[
    ("public.test", &["11.0.0.1"]),
    ("loopback.test", &["127.0.0.2"]),
    ("metadata.test", &["169.254.169.254"]),
    ("rfc1918.test", &["10.1.2.3"]),
    ("cgnat.test", &["100.100.100.200"]),
    ("ula.test", &["fd00:ec2::254"]),
    ("nat64.test", &["64:ff9b::a01:203"]),
    ("compatible.test", &["::a01:203"]),
    ("mapped.test", &["::ffff:127.0.0.1"]),
    ("multicast.test", &["224.0.0.1"]),
    ("this-host.test", &["11.9.9.9"]),
    ("mixed.test", &["11.0.0.2", "10.0.0.2"]),
];
/// The host's own address, as the test resolver reports it.
const OWN_ADDRESS: &str = "11.9.9.9";

struct TestLookup;

impl Lookup for TestLookup {
    fn lookup(
        &self,
        host: &str,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>> {
        let found = NAMES
            .iter()
            .find(|(name, _)| *name == host)
            .map(|(_, addresses)| addresses.iter().map(|a| a.parse().unwrap()).collect());
        Box::pin(async move {
            found.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "unknown name"))
        })
    }

    fn route(&self, _allowed: IpAddr) -> IpAddr {
        IpAddr::from([127, 0, 0, 1])
    }

    fn own_addresses(&self) -> Vec<IpAddr> {
        vec![OWN_ADDRESS.parse().unwrap()]
    }
}

/// An HTTP server on loopback that answers 200 to anything and records each request's
/// target (absolute for a request sent to a proxy) and Host: the webhook receiver, or a
/// forward proxy that forwards nothing.
#[derive(Clone, Default)]
struct Sink {
    port: u16,
    seen: Arc<Mutex<Vec<(String, String)>>>,
}

impl Sink {
    async fn start() -> Sink {
        async fn record(State(sink): State<Sink>, uri: Uri, headers: HeaderMap) -> &'static str {
            let host = headers
                .get("host")
                .and_then(|h| h.to_str().ok())
                .unwrap_or_default()
                .to_string();
            sink.seen.lock().unwrap().push((uri.to_string(), host));
            "ok"
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sink = Sink {
            port: listener.local_addr().unwrap().port(),
            ..Sink::default()
        };
        let app = axum::Router::new()
            .fallback(record)
            .with_state(sink.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        sink
    }

    fn seen(&self) -> Vec<(String, String)> {
        self.seen.lock().unwrap().clone()
    }
}

fn test_resolver(settings: &mut leasehold_server::Settings) {
    settings.notify.lookup = Arc::new(TestLookup);
    settings.notify.poll_interval = Duration::from_millis(50);
}

/// A webhook to `http://{name}:{port}/hook` for license changes.
async fn hook(api: &Api, name: &str, port: u16) -> String {
    let created = api
        .ok_post(
            "/v1/webhooks",
            json!({"url": format!("http://{name}:{port}/hook"), "events": ["license.updated"]}),
            StatusCode::CREATED,
        )
        .await;
    id(&created)
}

/// A license change, which every webhook above is sent.
async fn change_a_license(api: &Api) {
    let license = api.license(1).await;
    let (status, answer) = api
        .patch(
            &format!("/v1/licenses/{}", id(&license)),
            json!({"notes": "changed"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

/// The webhook's first delivery once an attempt has finished: delivered, or failed with
/// its error recorded (up to 20 s). (`attempts` counts an attempt from its start.)
async fn attempted(api: &Api, webhook: &str) -> Value {
    for _ in 0..400 {
        let page = api
            .ok_get(&format!("/v1/webhooks/{webhook}/deliveries"))
            .await;
        if let Some(delivery) = page["items"].as_array().and_then(|items| items.first()) {
            if delivery["state"] != "pending" || !delivery["last_error"].is_null() {
                return delivery.clone();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("webhook {webhook} was never attempted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_to_every_non_public_address_class_are_refused_before_connecting() {
    let s = TestServer::start_with(Backend::Sqlite, test_resolver).await;
    let api = s.workspace("Acme").await;
    let sink = Sink::start().await;
    let mut hooks = HashMap::new();
    for (name, _) in NAMES {
        hooks.insert(*name, hook(&api, name, sink.port).await);
    }
    change_a_license(&api).await;
    for (name, webhook) in &hooks {
        let delivery = attempted(&api, webhook).await;
        if *name == "public.test" {
            assert_eq!(delivery["state"], "delivered", "{delivery}");
            continue;
        }
        let error = delivery["last_error"].as_str().unwrap_or_default();
        assert!(
            error.starts_with(&format!("refused: {name} resolves to ")),
            "{name}: {delivery}"
        );
        assert!(delivery["last_status"].is_null(), "{name}: {delivery}");
    }
    let hint = attempted(&api, &hooks["rfc1918.test"]).await["last_error"].clone();
    assert!(
        hint.as_str().unwrap().contains("--webhook-allow-private"),
        "{hint}"
    );
    // One request reached the sink: the public one's.
    let seen = sink.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].1, format!("public.test:{}", sink.port));

    // Literal addresses are refused when the webhook is registered.
    for url in [
        "http://127.0.0.1:9/hook",
        "http://0.0.0.0/hook",
        "http://[::1]/hook",
        "http://localhost./hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/hook",
        "http://172.20.0.1/hook",
        "http://192.168.0.10/hook",
        "http://100.100.100.200/hook",
        "http://[fd00:ec2::254]/hook",
        "http://[64:ff9b::a00:1]/hook",
        "http://[::ffff:10.0.0.1]/hook",
        "http://[::10.0.0.1]/hook",
        "http://[2002:a00:1::1]/hook",
        "http://224.0.0.1/hook",
    ] {
        let (status, answer) = api
            .post(
                "/v1/webhooks",
                json!({"url": url, "events": ["license.updated"]}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("refused"), "{url}: {answer}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_networks_are_reached_only_when_allowed() {
    let s = TestServer::start_with(Backend::Sqlite, |settings| {
        test_resolver(settings);
        settings.notify.webhook_allow_private = true;
    })
    .await;
    let api = s.workspace("Acme").await;
    let sink = Sink::start().await;
    let private = hook(&api, "rfc1918.test", sink.port).await;
    let ula = hook(&api, "ula.test", sink.port).await;
    let local = hook(&api, "loopback.test", sink.port).await;
    change_a_license(&api).await;
    for webhook in [&private, &ula] {
        let delivery = attempted(&api, webhook).await;
        assert_eq!(delivery["state"], "delivered", "{delivery}");
    }
    let delivery = attempted(&api, &local).await;
    let error = delivery["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("--webhook-allow-local"), "{delivery}");
    assert_eq!(sink.seen().len(), 2, "{:?}", sink.seen());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environments_proxy_is_ignored_and_a_named_one_keeps_the_rules() {
    let proxy = Sink::start().await;
    let proxy_url = format!("http://127.0.0.1:{}", proxy.port);
    // As an operator's shell might have it. (The tests' own clients reach the servers
    // on 127.0.0.1 directly.)
    for name in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        std::env::set_var(name, &proxy_url);
    }
    std::env::set_var("NO_PROXY", "127.0.0.1,localhost");
    std::env::set_var("no_proxy", "127.0.0.1,localhost");

    let s = TestServer::start_with(Backend::Sqlite, test_resolver).await;
    let api = s.workspace("Acme").await;
    let sink = Sink::start().await;
    let public = hook(&api, "public.test", sink.port).await;
    let local = hook(&api, "loopback.test", sink.port).await;
    change_a_license(&api).await;
    assert_eq!(attempted(&api, &public).await["state"], "delivered");
    let refused = attempted(&api, &local).await;
    assert!(
        refused["last_error"]
            .as_str()
            .unwrap_or_default()
            .starts_with("refused: loopback.test"),
        "{refused}"
    );
    assert_eq!(
        sink.seen(),
        [("/hook".to_string(), format!("public.test:{}", sink.port))]
    );
    assert!(
        proxy.seen().is_empty(),
        "HTTP_PROXY was used: {:?}",
        proxy.seen()
    );
    s.stop().await;

    // With --webhook-proxy, deliveries go through it, and a name the rules refuse is
    // refused before the proxy is asked.
    let s = TestServer::start_with(Backend::Sqlite, |settings| {
        test_resolver(settings);
        settings.notify.webhook_proxy = Some(proxy_url.clone());
    })
    .await;
    let api = s.workspace("Acme").await;
    let public = hook(&api, "public.test", sink.port).await;
    let private = hook(&api, "rfc1918.test", sink.port).await;
    change_a_license(&api).await;
    assert_eq!(attempted(&api, &public).await["state"], "delivered");
    let refused = attempted(&api, &private).await;
    assert!(
        refused["last_error"]
            .as_str()
            .unwrap_or_default()
            .starts_with("refused: rfc1918.test"),
        "{refused}"
    );
    assert_eq!(
        proxy.seen(),
        [(
            format!("http://public.test:{}/hook", sink.port),
            format!("public.test:{}", sink.port)
        )]
    );
    assert_eq!(sink.seen().len(), 1, "nothing went around the proxy");
    s.stop().await;
}
