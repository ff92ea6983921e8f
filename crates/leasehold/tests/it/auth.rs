//! Tokens, roles and workspace isolation.

use crate::client::{client, lease_body};
use crate::harness::{both_stores, id, TestServer};
use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;

both_stores!(
    requests_without_a_valid_token_are_unauthorized,
    roles_grant_exactly_their_permissions,
    revoked_tokens_stop_working,
    a_revoked_tokens_live_stream_ends,
    a_console_sessions_live_stream_ends_at_sign_out,
    another_workspaces_objects_do_not_exist,
);

async fn requests_without_a_valid_token_are_unauthorized(s: &TestServer) {
    s.workspace("Acme").await;
    let (status, body) = s.anonymous().get("/v1/licenses").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "UNAUTHORIZED");
    let (status, _) = s.api("lh_not-a-token").get("/v1/licenses").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = s
        .anonymous()
        .post(
            "/v1/applications",
            json!({"name": "x", "deployment_model": "cloud"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

async fn roles_grant_exactly_their_permissions(s: &TestServer) {
    let owner = s.workspace("Acme").await;
    let license = owner.license(5).await;
    let seats = format!("/v1/licenses/{}/seats", id(&license));
    let app = json!({"name": "App", "deployment_model": "cloud"});

    let viewer = owner.token("viewer").await;
    assert_eq!(viewer.get(&seats).await.0, StatusCode::OK);
    let (status, body) = viewer.post("/v1/applications", app.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "FORBIDDEN");
    assert_eq!(body["error"]["details"]["permission"], "license.manage");
    assert_eq!(
        viewer.post(&seats, json!({"assignee_name": "A"})).await.0,
        StatusCode::FORBIDDEN
    );

    let assigner = owner.token("assigner").await;
    let seat = assigner
        .ok_post(&seats, json!({"assignee_name": "A"}), StatusCode::CREATED)
        .await;
    assigner
        .ok_post(
            &format!("/v1/seats/{}/reclaim", id(&seat)),
            json!({}),
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        assigner.post("/v1/applications", app.clone()).await.0,
        StatusCode::FORBIDDEN
    );
    let (status, _) = assigner
        .patch(
            &format!("/v1/licenses/{}", id(&license)),
            json!({"seats_total": 9}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let manager = owner.token("manager").await;
    manager
        .ok_post("/v1/applications", app, StatusCode::CREATED)
        .await;
    let (status, _) = manager
        .post("/v1/tokens", json!({"name": "x", "role": "viewer"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "tokens need workspace.admin");
    assert_eq!(manager.get("/v1/tokens").await.0, StatusCode::FORBIDDEN);

    let tokens = owner.ok_get("/v1/tokens").await;
    let items = tokens["items"].as_array().unwrap();
    assert_eq!(items.len(), 4, "owner's, viewer, assigner, manager");
    assert!(
        items.iter().all(|t| t.get("token").is_none()),
        "secrets are never listed"
    );
    let me = owner.ok_get("/v1/workspace").await;
    assert_eq!(me["name"], "Acme");
    assert!(me["permissions"]
        .as_array()
        .unwrap()
        .contains(&json!("workspace.admin")));
}

async fn revoked_tokens_stop_working(s: &TestServer) {
    let owner = s.workspace("Acme").await;
    let created = owner
        .ok_post(
            "/v1/tokens",
            json!({"name": "ci", "role": "viewer"}),
            StatusCode::CREATED,
        )
        .await;
    let token = created["token"].as_str().unwrap();
    assert!(token.starts_with("lh_"));
    let ci = s.api(token);
    assert_eq!(ci.get("/v1/licenses").await.0, StatusCode::OK);
    let (status, revoked) = owner.delete(&format!("/v1/tokens/{}", id(&created))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(revoked["revoked_at"].is_string());
    assert_eq!(ci.get("/v1/licenses").await.0, StatusCode::UNAUTHORIZED);
}

/// The live stream authenticates once when it opens; it checks again every few seconds,
/// so a revoked token (or an ended console session) stops receiving seat changes.
async fn a_revoked_tokens_live_stream_ends(s: &TestServer) {
    let owner = s.workspace("Acme").await;
    let license = owner
        .license_with(json!({"seat_model": "concurrent", "seats_total": 100}))
        .await;
    let created = owner
        .ok_post(
            "/v1/tokens",
            json!({"name": "wall screen", "role": "viewer"}),
            StatusCode::CREATED,
        )
        .await;
    let mut stream = ready(
        reqwest::Client::new()
            .get(format!("{}/v1/events/stream", s.base))
            .bearer_auth(created["token"].as_str().unwrap()),
    )
    .await;
    let mut seen = String::new();
    let take = |fingerprint: &str| json!({"key": license["key"], "fingerprint": fingerprint, "os_user": "u", "instance": "1"});
    s.anonymous()
        .ok_post("/v1/client/leases", take("before"), StatusCode::CREATED)
        .await;
    while !seen.contains("seat.taken") {
        seen.push_str(&next_text(&mut stream).await.unwrap());
    }

    let (status, _) = owner.delete(&format!("/v1/tokens/{}", id(&created))).await;
    assert_eq!(status, StatusCode::OK);
    assert_stream_ends(
        s,
        &license,
        stream,
        "the stream of a revoked token is still open",
    )
    .await;
}

/// A console page's live stream (authenticated by the session cookie) ends once the
/// session does: here at sign-out, which deletes it as its expiry would.
async fn a_console_sessions_live_stream_ends_at_sign_out(s: &TestServer) {
    let owner = s.workspace("Acme").await;
    let license = owner
        .license_with(json!({"seat_model": "concurrent", "seats_total": 100}))
        .await;
    let crate::harness::ConsoleSession {
        client: browser,
        cookie,
        csrf,
    } = s
        .console_session("owner@example.com", "correct horse battery")
        .await;
    let stream = ready(
        browser
            .get(format!("{}/v1/events/stream", s.base))
            .header(reqwest::header::COOKIE, &cookie),
    )
    .await;
    let signed_out = browser
        .post(format!("{}/logout", s.base))
        .header(reqwest::header::COOKIE, &cookie)
        .form(&[("_csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_out.status(), StatusCode::SEE_OTHER);
    assert_stream_ends(
        s,
        &license,
        stream,
        "the stream of a signed-out session is still open",
    )
    .await;
}

/// Seats keep changing on `license`; `stream` must end within the recheck interval (and a
/// few seconds more).
async fn assert_stream_ends(
    s: &TestServer,
    license: &serde_json::Value,
    mut stream: reqwest::Response,
    still_open: &str,
) {
    let take = |fingerprint: &str| json!({"key": license["key"], "fingerprint": fingerprint, "os_user": "u", "instance": "1"});
    let ended_at = tokio::time::Instant::now() + Duration::from_secs(12);
    for round in 0.. {
        s.anonymous()
            .ok_post(
                "/v1/client/leases",
                take(&format!("after-{round}")),
                StatusCode::CREATED,
            )
            .await;
        // Read what came for half a second; stop once the stream ends.
        let read_until = tokio::time::Instant::now() + Duration::from_millis(500);
        let ended = loop {
            match tokio::time::timeout_at(read_until, stream.chunk()).await {
                Ok(Ok(Some(_))) => continue,
                Ok(Ok(None) | Err(_)) => break true,
                Err(_) => break false,
            }
        };
        if ended {
            break;
        }
        assert!(tokio::time::Instant::now() < ended_at, "{still_open}");
    }
}

/// The live stream `request` opens, once it said it is ready.
async fn ready(request: reqwest::RequestBuilder) -> reqwest::Response {
    let mut stream = request.send().await.unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    let mut seen = String::new();
    while !seen.contains("ready") {
        seen.push_str(&next_text(&mut stream).await.unwrap());
    }
    stream
}

/// The stream's next chunk as text (`None` once it ended), within 15 s.
async fn next_text(stream: &mut reqwest::Response) -> Option<String> {
    tokio::time::timeout(Duration::from_secs(15), stream.chunk())
        .await
        .expect("the stream answered or ended in time")
        .unwrap()
        .map(|chunk| String::from_utf8_lossy(&chunk).into_owned())
}

async fn another_workspaces_objects_do_not_exist(s: &TestServer) {
    let acme = s.workspace("Acme").await;
    let globex = s.workspace("Globex").await;
    let license = acme.license(2).await;
    let lid = id(&license);
    let app = license["application_id"].as_str().unwrap().to_string();
    let seat = acme
        .ok_post(
            &format!("/v1/licenses/{lid}/seats"),
            json!({"assignee_name": "Ann"}),
            StatusCode::CREATED,
        )
        .await;
    let contact = acme
        .ok_post("/v1/contacts", json!({"name": "Ann"}), StatusCode::CREATED)
        .await;
    let token = acme
        .ok_post(
            "/v1/tokens",
            json!({"name": "t", "role": "viewer"}),
            StatusCode::CREATED,
        )
        .await;

    let not_found = [
        globex.get(&format!("/v1/licenses/{lid}")).await,
        globex
            .patch(&format!("/v1/licenses/{lid}"), json!({"seats_total": 1}))
            .await,
        globex.delete(&format!("/v1/licenses/{lid}")).await,
        globex
            .post(&format!("/v1/licenses/{lid}/reveal-key"), json!({}))
            .await,
        globex.get(&format!("/v1/licenses/{lid}/seats")).await,
        globex
            .post(
                &format!("/v1/licenses/{lid}/seats"),
                json!({"assignee_name": "Eve"}),
            )
            .await,
        globex
            .post(&format!("/v1/seats/{}/reclaim", id(&seat)), json!({}))
            .await,
        globex.get(&format!("/v1/applications/{app}")).await,
        globex.delete(&format!("/v1/applications/{app}")).await,
        globex.get(&format!("/v1/contacts/{}", id(&contact))).await,
        globex
            .post(
                &format!("/v1/contacts/{}/terminate", id(&contact)),
                json!({}),
            )
            .await,
        globex.delete(&format!("/v1/tokens/{}", id(&token))).await,
        globex.get("/v1/licenses/does-not-exist").await,
    ];
    for (status, body) in &not_found {
        assert_eq!(*status, StatusCode::NOT_FOUND, "{body}");
        assert_eq!(body["error"]["code"], "NOT_FOUND");
    }
    // A license in another workspace's application cannot be made either.
    let (status, body) = globex
        .post(
            "/v1/licenses",
            json!({"application_id": app, "licensed_to": "x", "type": "trial", "seats_total": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    for list in [
        "/v1/licenses",
        "/v1/applications",
        "/v1/contacts",
        "/v1/reminders",
    ] {
        assert!(
            globex.ok_get(list).await["items"]
                .as_array()
                .unwrap()
                .is_empty(),
            "{list}"
        );
    }
    let events = globex.ok_get(&format!("/v1/events?license_id={lid}")).await;
    assert!(events["items"].as_array().unwrap().is_empty());
    // Nothing changed in Acme.
    let read = acme.ok_get(&format!("/v1/licenses/{lid}")).await;
    assert_eq!(read["seats_total"], 2);
    assert_eq!(read["seats_used"], 1);
}

/// Console sign-in is limited per account and per address: one address trying many
/// accounts is stopped after 30 attempts a minute, even with a right password then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_sign_in_attempts_are_limited_per_address() {
    let s = crate::harness::TestServer::start(crate::harness::Backend::Sqlite).await;
    s.workspace("Acme").await;
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let sign_in = |email: String, password: &'static str| {
        browser
            .post(format!("{}/login", s.base))
            // The form's double-submitted CSRF token: cookie and field agree.
            .header(reqwest::header::COOKIE, "lh_login_csrf=t")
            .form(&[
                ("_csrf", "t"),
                ("email", email.as_str()),
                ("password", password),
            ])
    };
    // 40 attempts at once, each for another account. Every attempt checks a password (an
    // unknown address's too), so they are sent together, and the owner's comes as soon as
    // the first is answered: the address's 30 a minute (one more every 2 s) are used up.
    use futures::StreamExt;
    let mut spray: futures::stream::FuturesUnordered<_> = (0..40)
        .map(|i| {
            // A client's own X-Forwarded-For is not believed: no proxy is trusted here.
            sign_in(format!("nobody{i}@example.com"), "guess")
                .header("x-forwarded-for", format!("203.0.113.{i}"))
                .send()
        })
        .collect();
    let mut statuses = vec![spray.next().await.unwrap().unwrap().status()];
    let owner = sign_in("owner@example.com".into(), "correct horse battery")
        .send()
        .await
        .unwrap();
    assert_eq!(owner.status(), StatusCode::TOO_MANY_REQUESTS);
    while let Some(answer) = spray.next().await {
        statuses.push(answer.unwrap().status());
    }
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(refused >= 5, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::SEE_OTHER || *s == StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    s.stop().await;
}

/// Behind a trusted reverse proxy, the per-address limit counts the address the proxy
/// forwards: one client spraying passwords is stopped, another behind the same proxy is
/// not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_sign_in_limits_count_the_forwarded_address() {
    let s = crate::harness::TestServer::start_with(crate::harness::Backend::Sqlite, |settings| {
        settings.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    s.workspace("Acme").await;
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let sign_in = |from: &str, email: String, password: &'static str| {
        browser
            .post(format!("{}/login", s.base))
            .header(reqwest::header::COOKIE, "lh_login_csrf=t")
            .header("x-forwarded-for", from.to_string())
            .form(&[
                ("_csrf", "t"),
                ("email", email.as_str()),
                ("password", password),
            ])
            .send()
    };
    // 40 attempts at once from one address, each for another account: the address's 30
    // a minute let about 30 through (every attempt checks a password, so they are sent
    // together, lest the limiter refill while earlier ones are checked), the rest are
    // refused.
    let attempts: Vec<_> = (0..40)
        .map(|i| sign_in("203.0.113.1", format!("nobody{i}@example.com"), "guess"))
        .collect();
    let statuses: Vec<StatusCode> = futures::future::join_all(attempts)
        .await
        .into_iter()
        .map(|r| r.unwrap().status())
        .collect();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::SEE_OTHER || *s == StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    assert!(
        refused >= 5,
        "the address's limit refused the spray: {statuses:?}"
    );
    let owner = sign_in(
        "203.0.113.2",
        "owner@example.com".into(),
        "correct horse battery",
    )
    .await
    .unwrap();
    assert_eq!(owner.status(), StatusCode::SEE_OTHER);
    assert_eq!(owner.headers()["location"], "/", "signed in");
    s.stop().await;
}

both_stores!(a_key_reaches_only_its_own_workspace,);

async fn a_key_reaches_only_its_own_workspace(s: &TestServer) {
    let acme = s.workspace("Acme").await;
    let globex = s.workspace("Globex").await;
    let theirs = acme
        .license_with(json!({"seat_model": "concurrent", "seats_total": 2}))
        .await;
    let mine = globex
        .license_with(json!({"seat_model": "concurrent", "seats_total": 2}))
        .await;
    let c = client(s);
    let lease = c
        .ok_post(
            "/v1/client/leases",
            lease_body(theirs["key"].as_str().unwrap(), "m1", "ann", "i1"),
            StatusCode::CREATED,
        )
        .await;
    let my_key = mine["key"].as_str().unwrap();
    let (status, _) = c
        .post(
            &format!("/v1/client/leases/{}/heartbeat", id(&lease)),
            json!({"key": my_key, "instance": "i1"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = c
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/client/leases/{}/instances/i1", id(&lease)),
            Some(json!({"key": my_key})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        acme.ok_get(&format!("/v1/licenses/{}", id(&theirs))).await["seats_used"],
        1
    );
    let a = acme.ok_get("/v1/public-key").await;
    let g = globex.ok_get("/v1/public-key").await;
    assert_ne!(
        a["public_key"], g["public_key"],
        "each workspace signs with its own key"
    );
}
