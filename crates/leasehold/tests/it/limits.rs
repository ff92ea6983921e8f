//! Limits that hold under abuse (DESIGN §11): what one license key can make the server
//! store is bounded.

use crate::client::client;
use crate::harness::Backend;
use crate::harness::{both_stores, id, TestServer};
use reqwest::StatusCode;
use serde_json::json;
use serde_json::Value;

both_stores!(
    a_lease_counts_at_most_its_policys_instances,
    client_names_are_bounded_and_plain,
    the_consoles_forms_check_what_the_api_checks,
);

async fn a_lease_counts_at_most_its_policys_instances(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let license = admin
        .license_with(json!({"seat_model": "concurrent", "seats_total": 1,
                             "policy": {"max_instances_per_lease": 3}}))
        .await;
    assert_eq!(license["policy"]["max_instances_per_lease"], 3);
    let (key, lid) = (license["key"].as_str().unwrap(), id(&license));
    let c = s.anonymous();
    let take = |instance: &str| json!({"key": key, "fingerprint": "m1", "os_user": "ann", "instance": instance});
    let lease = c
        .ok_post("/v1/client/leases", take("i1"), StatusCode::CREATED)
        .await;
    let lease_id = id(&lease);
    for instance in ["i2", "i3", "i1"] {
        c.ok_post("/v1/client/leases", take(instance), StatusCode::OK)
            .await;
    }
    let (status, answer) = c.post("/v1/client/leases", take("i4")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(answer["error"]["code"], "INSTANCE_LIMIT");
    assert_eq!(answer["error"]["details"]["limit"], 3);
    // A heartbeat from an instance the lease does not count is refused alike; a counted
    // one keeps the lease.
    let heartbeat = format!("/v1/client/leases/{lease_id}/heartbeat");
    let (status, answer) = c
        .post(&heartbeat, json!({"key": key, "instance": "i5"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(answer["error"]["code"], "INSTANCE_LIMIT");
    c.ok_post(
        &heartbeat,
        json!({"key": key, "instance": "i2"}),
        StatusCode::OK,
    )
    .await;
    // One checks in: another may join.
    let (status, answer) = c
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/client/leases/{lease_id}/instances/i1"),
            Some(json!({"key": key})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let joined = c
        .ok_post("/v1/client/leases", take("i4"), StatusCode::OK)
        .await;
    assert_eq!(joined["instances"], json!(["i2", "i3", "i4"]));
    assert_eq!(admin.seats_used(&lid).await, 1);
    // The policy is checked like the others.
    let (status, answer) = admin
        .patch(
            &format!("/v1/licenses/{lid}"),
            json!({"policy": {"max_instances_per_lease": 0}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(
        answer["error"]["details"]["field"],
        "policy.max_instances_per_lease"
    );
}

async fn client_names_are_bounded_and_plain(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let license = admin
        .license_with(json!({"seat_model": "concurrent", "seats_total": 5}))
        .await;
    let (key, lid) = (license["key"].as_str().unwrap(), id(&license));
    let c = s.anonymous();
    let long = "f".repeat(257);
    let longest = "f".repeat(256);
    for (field, value) in [
        ("fingerprint", long.as_str()),
        ("fingerprint", "m1\u{202E}exe.txt"),
        ("os_user", "ann\nroot"),
        ("identifier", "PC\u{2066}1"),
        ("instance", "i\u{0007}"),
    ] {
        let mut body = json!({"key": key, "fingerprint": "m1", "os_user": "ann",
                              "identifier": "PC", "instance": "i1"});
        body[field] = json!(value);
        let (status, answer) = c.post("/v1/client/leases", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}: {answer}");
        assert_eq!(answer["error"]["details"]["field"], field, "{answer}");
    }
    let (status, answer) = c
        .post(
            "/v1/client/validate",
            json!({"key": key, "fingerprint": "m\u{202D}1"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"]["details"]["field"], "fingerprint");
    assert_eq!(admin.seats_used(&lid).await, 0, "nothing was taken");
    c.ok_post(
        "/v1/client/leases",
        json!({"key": key, "fingerprint": longest, "os_user": "ann", "instance": "i1"}),
        StatusCode::CREATED,
    )
    .await;
}

/// Whether the server has closed this socket (a read sees the end, or an error).
async fn closed_by_server(socket: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 512];
    loop {
        match tokio::time::timeout(std::time::Duration::from_millis(50), socket.read(&mut buf))
            .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // Bytes (a 408, say): read on to the end.
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

async fn healthz(base: &str) -> bool {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .unwrap();
    matches!(client.get(format!("{base}/healthz")).send().await, Ok(r) if r.status().is_success())
}

/// The review's slow-request attack: 300 requests whose head never ends. `/healthz` keeps
/// answering, and the server closes each of them once its head is overdue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_requests_are_closed_and_healthz_keeps_answering() {
    use tokio::io::AsyncWriteExt;
    let s = TestServer::start(crate::harness::Backend::Sqlite).await;
    let address = s.base.trim_start_matches("http://").to_string();
    let mut sockets = Vec::new();
    for _ in 0..300 {
        let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
        socket
            .write_all(b"POST /v1/client/validate HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        sockets.push(socket);
    }
    assert!(healthz(&s.base).await, "healthz answers beside them");
    // The head's time is 10 s: allow the 2 shared cores plenty more.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !sockets.is_empty() && std::time::Instant::now() < deadline {
        let mut open = Vec::new();
        for mut socket in sockets.drain(..) {
            if !closed_by_server(&mut socket).await {
                open.push(socket);
            }
        }
        sockets = open;
    }
    let all_closed = sockets.is_empty();
    assert!(
        all_closed,
        "{} half-open requests are still open",
        sockets.len()
    );
    assert!(healthz(&s.base).await);
    s.stop().await;
}

/// A connection past `max_connections` is closed at once; the server answers again once
/// connections end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_past_the_limit_is_closed_at_once() {
    let s = TestServer::start_with(crate::harness::Backend::Sqlite, |settings| {
        settings.max_connections = 20;
    })
    .await;
    let address = s.base.trim_start_matches("http://").to_string();
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(tokio::net::TcpStream::connect(&address).await.unwrap());
    }
    // The server accepts in order: once it has taken the 20, the next is closed.
    let refused = crate::harness::eventually(20, || {
        let address = address.clone();
        async move {
            let mut extra = tokio::net::TcpStream::connect(&address).await.unwrap();
            closed_by_server(&mut extra).await
        }
    })
    .await;
    assert!(refused, "a 21st connection is closed by the server");
    held.clear();
    assert!(
        crate::harness::eventually(20, || healthz(&s.base)).await,
        "served again once the connections ended"
    );
    s.stop().await;
}

/// One token (the review held 3,000) opens at most 16 event streams; another token has
/// its own; a closed stream gives its place back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_holds_at_most_sixteen_event_streams() {
    let s = TestServer::start(crate::harness::Backend::Sqlite).await;
    let owner = s.workspace("Acme").await;
    let license = owner
        .license_with(json!({"seat_model": "concurrent", "seats_total": 1000}))
        .await;
    let viewer = owner.token("viewer").await;
    let other = owner.token("viewer").await;
    let open = |api: &crate::harness::Api| {
        let request = reqwest::Client::new()
            .get(format!("{}/v1/events/stream", s.base))
            .bearer_auth(api.token.clone().unwrap());
        async move { request.send().await.unwrap() }
    };
    let mut streams = Vec::new();
    for _ in 0..16 {
        let stream = open(&viewer).await;
        assert_eq!(stream.status(), StatusCode::OK);
        streams.push(stream);
    }
    let refused = open(&viewer).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "RATE_LIMITED");
    assert_eq!(open(&other).await.status(), StatusCode::OK);
    // One goes away: the server notices at its next event, and the place is free again.
    streams.pop();
    let key = license["key"].as_str().unwrap().to_string();
    let mut n = 0;
    let reopened = crate::harness::eventually(30, || {
        n += 1;
        let take =
            json!({"key": key, "fingerprint": format!("m{n}"), "os_user": "u", "instance": "i"});
        let (client, attempt) = (s.anonymous(), open(&viewer));
        async move {
            client
                .ok_post("/v1/client/leases", take, StatusCode::CREATED)
                .await;
            attempt.await.status() == StatusCode::OK
        }
    })
    .await;
    assert!(reopened, "the closed stream's place was given back");
    drop(streams);
    s.stop().await;
}

/// Answers that carry a secret shown once are never cached (the review found none said so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_carrying_a_secret_are_not_cached() {
    let s = TestServer::start(crate::harness::Backend::Sqlite).await;
    let owner = s.workspace("Acme").await;
    let app = owner.application("CAD").await;
    let client = reqwest::Client::new();
    let token = owner.token.clone().unwrap();
    for (path, body) in [
        (
            "/v1/licenses",
            json!({"application_id": app, "licensed_to": "Acme", "type": "subscription", "seats_total": 1}),
        ),
        ("/v1/tokens", json!({"name": "ci", "role": "viewer"})),
    ] {
        let response = client
            .post(format!("{}{path}", s.base))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "{path}");
        assert_eq!(response.headers()["cache-control"], "no-store", "{path}");
    }
    s.stop().await;
}

/// The console's "Add application" and "Add contact" check what they store as the API
/// does (the review stored a NUL, a 60,000-character name and an email without `@`).
async fn the_consoles_forms_check_what_the_api_checks(s: &TestServer) {
    let owner = s.workspace("Acme").await;
    let crate::harness::ConsoleSession {
        client: browser,
        cookie,
        csrf,
    } = s
        .console_session("owner@example.com", "correct horse battery")
        .await;
    let post = |path: &'static str, fields: Vec<(&'static str, String)>| {
        let mut form = vec![("_csrf", csrf.clone())];
        form.extend(fields);
        let request = browser
            .post(format!("{}{path}", s.base))
            .header(reqwest::header::COOKIE, &cookie)
            .form(&form);
        async move { request.send().await.unwrap().status() }
    };
    let long = "n".repeat(60_000);
    for name in ["nul\0name".to_string(), long.clone(), " ".to_string()] {
        let status = post("/applications", vec![("name", name)]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
    for (name, email) in [
        ("nul\0name".to_string(), "dana@example.com"),
        (long, "dana@example.com"),
        ("Dana".to_string(), "no-at-sign"),
    ] {
        let status = post("/contacts", vec![("name", name), ("email", email.into())]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
    let status = post(
        "/contacts",
        vec![
            ("name", "Dana".into()),
            ("email", "dana@example.com".into()),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "a good contact is added");
    let applications = owner.ok_get("/v1/applications").await;
    assert_eq!(applications["items"].as_array().unwrap().len(), 0);
    let contacts = owner.ok_get("/v1/contacts").await;
    assert_eq!(
        contacts["items"].as_array().unwrap().len(),
        1,
        "only the good one"
    );
}

/// Behind a trusted load balancer, the client protocol's per-address limit counts the
/// address the balancer forwards: one client's flood does not refuse another client
/// behind the same balancer. The flood spreads over three keys, so it is the address's
/// limit, not a key's, that stops it.
#[tokio::test]
async fn behind_a_trusted_proxy_client_limits_count_the_forwarded_address() {
    let s = TestServer::start_with(Backend::Sqlite, |settings| {
        settings.client_rate_limit = 2;
        settings.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let admin = s.workspace("Acme").await;
    let mut keys = Vec::new();
    for _ in 0..3 {
        let license = admin.license(1).await;
        keys.push(license["key"].as_str().unwrap().to_string());
    }
    let c = client(&s);
    let validate = |from: &'static str, key: &str| {
        c.client
            .post(format!("{}/v1/client/validate", s.base))
            .header("x-forwarded-for", from)
            .json(&json!({"key": key}))
            .send()
    };
    let mut refused_after = None;
    for i in 0..40 {
        let response = validate("203.0.113.1", &keys[i % 3]).await.unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            refused_after = Some(i);
            break;
        }
        assert_eq!(response.status(), StatusCode::OK);
    }
    let refused_after = refused_after.expect("2/s with a burst of 20 must refuse 40 at once");
    assert!(
        refused_after >= 20,
        "the burst was allowed: {refused_after}"
    );
    let other = validate("203.0.113.2", &keys[0]).await.unwrap();
    assert_eq!(
        other.status(),
        StatusCode::OK,
        "another client behind the same proxy is not refused"
    );
    let again = validate("203.0.113.1", &keys[1]).await.unwrap();
    assert_eq!(again.status(), StatusCode::TOO_MANY_REQUESTS);
    s.stop().await;
}

#[tokio::test]
async fn client_calls_are_rate_limited_per_ip_and_key() {
    let s =
        TestServer::start_with(Backend::Sqlite, |settings| settings.client_rate_limit = 2).await;
    let admin = s.workspace("Acme").await;
    // Three keys: the address's burst runs out first, each key's not.
    let mut licenses = Vec::new();
    for _ in 0..3 {
        licenses.push(admin.license(1).await);
    }
    let c = client(&s);
    let mut limited = None;
    for n in 0..40 {
        let response = c
            .client
            .post(format!("{}/v1/client/validate", s.base))
            .json(&json!({"key": licenses[n % 3]["key"]}))
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(response);
            break;
        }
    }
    let response = limited.expect("2/s with a burst of 20 must refuse 40 at once");
    assert!(response.headers().contains_key("retry-after"));
    let signature = response.headers()["leasehold-signature"].to_str().unwrap();
    assert!(
        signature.starts_with("ed25519="),
        "the limiter's refusal is signed too: {signature}"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "RATE_LIMITED");
    s.stop().await;
}
