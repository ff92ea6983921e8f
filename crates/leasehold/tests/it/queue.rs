//! The wait queue of a full floating license (DESIGN §7): places in order, freed seats to
//! the head, no jumping by newcomers, silent waiters dropped, leaving, and the long poll.

use crate::client::client;
use crate::harness::{both_stores, id, init_store, process_stores, Api, ServerProcess, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

both_stores!(
    freed_seats_go_to_the_waiters_in_order_and_never_to_a_newcomer,
    a_silent_waiter_loses_its_place,
    a_waiter_leaves_the_queue,
    a_long_polling_waiter_gets_the_seat_once_it_is_freed,
    queue_requests_are_checked_and_a_queue_can_be_off,
);

fn wants(key: &str, machine: &str, queue: bool) -> Value {
    json!({"key": key, "fingerprint": machine, "os_user": "u", "instance": "1", "queue": queue})
}

/// Asks for a seat; answers the lease id, or the `NO_SEATS` details.
async fn ask(c: &Api, key: &str, machine: &str, queue: bool) -> Result<String, Value> {
    let (status, body) = c
        .post("/v1/client/leases", wants(key, machine, queue))
        .await;
    match status {
        StatusCode::CREATED => Ok(id(&body)),
        StatusCode::CONFLICT if body["error"]["code"] == "NO_SEATS" => {
            Err(body["error"]["details"].clone())
        }
        other => panic!("unexpected {other}: {body}"),
    }
}

async fn check_in(c: &Api, key: &str, lease: &str) {
    let path = format!("/v1/client/leases/{lease}/instances/1");
    let (status, body) = c
        .call(Method::DELETE, &path, Some(json!({"key": key})))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// The machines in the license's queue, head first.
async fn queue_of(admin: &Api, license_id: &str) -> Vec<String> {
    let queue = admin
        .ok_get(&format!("/v1/licenses/{license_id}/queue"))
        .await;
    let items = queue["items"].as_array().unwrap();
    for (n, item) in items.iter().enumerate() {
        assert_eq!(item["position"], n as i64 + 1, "{queue}");
    }
    items
        .iter()
        .map(|item| item["fingerprint"].as_str().unwrap().to_string())
        .collect()
}

async fn floating(admin: &Api, seats: i64, policy: Value) -> (String, String) {
    let license = admin
        .license_with(json!({"seat_model": "concurrent", "seats_total": seats, "policy": policy}))
        .await;
    (license["key"].as_str().unwrap().to_string(), id(&license))
}

async fn freed_seats_go_to_the_waiters_in_order_and_never_to_a_newcomer(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let (key, lid) = floating(&admin, 2, json!({})).await;
    let c = client(s);
    let a = ask(&c, &key, "a", false).await.unwrap();
    let b = ask(&c, &key, "b", false).await.unwrap();
    // Five waiters in turn: each is told its place.
    for (n, machine) in ["c", "d", "e", "f", "g"].iter().enumerate() {
        let details = ask(&c, &key, machine, true).await.unwrap_err();
        assert_eq!(details["queue_position"], n as i64 + 1, "{details}");
        assert_eq!(details["queued"], n as i64 + 1, "{details}");
    }
    assert_eq!(queue_of(&admin, &lid).await, ["c", "d", "e", "f", "g"]);
    // Asking again keeps one's place.
    let details = ask(&c, &key, "e", true).await.unwrap_err();
    assert_eq!(details["queue_position"], 3, "{details}");

    // A seat is freed: a newcomer, queued or not, and the second waiter are refused; the
    // head gets it.
    check_in(&c, &key, &a).await;
    let details = ask(&c, &key, "newcomer", false).await.unwrap_err();
    assert_eq!(details["queued"], 5, "{details}");
    assert!(details.get("queue_position").is_none(), "{details}");
    assert_eq!(
        ask(&c, &key, "d", true).await.unwrap_err()["queue_position"],
        2
    );
    let c_lease = ask(&c, &key, "c", true)
        .await
        .expect("the head gets the seat");
    assert_eq!(queue_of(&admin, &lid).await, ["d", "e", "f", "g"]);

    // Two seats freed at once: they are the first two waiters', in either order.
    check_in(&c, &key, &b).await;
    check_in(&c, &key, &c_lease).await;
    assert!(ask(&c, &key, "f", true).await.is_err(), "f is third");
    ask(&c, &key, "e", true).await.expect("e is second of two");
    ask(&c, &key, "d", true).await.expect("d is first");
    assert_eq!(queue_of(&admin, &lid).await, ["f", "g"]);
    assert_eq!(admin.seats_used(&lid).await, 2);
}

async fn a_silent_waiter_loses_its_place(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let (key, lid) = floating(&admin, 1, json!({"queue_ttl_s": 1})).await;
    let c = client(s);
    let a = ask(&c, &key, "a", false).await.unwrap();
    ask(&c, &key, "b", true).await.unwrap_err();
    assert_eq!(queue_of(&admin, &lid).await, ["b"]);
    // b never asks again: once its queue_ttl_s has passed, it no longer holds a place.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !queue_of(&admin, &lid).await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the silent waiter kept its place"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    check_in(&c, &key, &a).await;
    ask(&c, &key, "newcomer", false)
        .await
        .expect("nobody waits any more");
    // The audit log says the place ended, and why.
    let dequeued = admin.events(&lid, "seat.dequeued").await;
    assert_eq!(dequeued.len(), 1, "{dequeued:?}");
    assert_eq!(dequeued[0]["before"]["fingerprint"], "b");
    assert_eq!(dequeued[0]["before"]["reason"], "silent");
    assert_eq!(dequeued[0]["actor"]["kind"], "system");
}

async fn a_waiter_leaves_the_queue(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let (key, lid) = floating(&admin, 1, json!({})).await;
    let c = client(s);
    let a = ask(&c, &key, "a", false).await.unwrap();
    ask(&c, &key, "b", true).await.unwrap_err();
    ask(&c, &key, "c", true).await.unwrap_err();
    let leave = json!({"key": key, "fingerprint": "b", "os_user": "u"});
    let (status, body) = c.post("/v1/client/queue/leave", leave.clone()).await;
    assert_eq!(
        (status, body["left"].clone()),
        (StatusCode::OK, json!(true))
    );
    let (status, body) = c.post("/v1/client/queue/leave", leave).await;
    assert_eq!(
        (status, body["left"].clone()),
        (StatusCode::OK, json!(false))
    );
    assert_eq!(queue_of(&admin, &lid).await, ["c"]);
    assert_eq!(
        ask(&c, &key, "c", true).await.unwrap_err()["queue_position"],
        1
    );
    check_in(&c, &key, &a).await;
    ask(&c, &key, "c", true).await.expect("c is the head now");
}

async fn a_long_polling_waiter_gets_the_seat_once_it_is_freed(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let (key, lid) = floating(&admin, 1, json!({})).await;
    let c = client(s);
    let a = ask(&c, &key, "a", false).await.unwrap();
    let waiter = {
        let (c, key) = (c.clone(), key.clone());
        tokio::spawn(async move {
            let mut body = wants(&key, "b", true);
            body["wait_s"] = json!(60);
            c.post("/v1/client/leases", body).await
        })
    };
    // Once b holds its place, a checks in; b's open request gets the seat.
    let deadline = Instant::now() + Duration::from_secs(20);
    while queue_of(&admin, &lid).await.is_empty() {
        assert!(Instant::now() < deadline, "b never queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check_in(&c, &key, &a).await;
    let (status, lease) = waiter.await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{lease}");
    assert!(queue_of(&admin, &lid).await.is_empty());
    assert_eq!(admin.seats_used(&lid).await, 1);

    // A waiter whose wait runs out is told its place, and keeps it.
    let mut body = wants(&key, "c", true);
    body["wait_s"] = json!(1);
    let (status, answer) = c.post("/v1/client/leases", body).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(answer["error"]["details"]["queue_position"], 1, "{answer}");
    assert_eq!(
        answer["error"]["message"],
        "all 1 seats of this license are in use; you are next in the queue"
    );
}

async fn queue_requests_are_checked_and_a_queue_can_be_off(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let (key, lid) = floating(&admin, 1, json!({})).await;
    let c = client(s);
    for (wait_s, queue) in [(61, true), (5, false)] {
        let mut body = wants(&key, "a", queue);
        body["wait_s"] = json!(wait_s);
        let (status, answer) = c.post("/v1/client/leases", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["error"]["details"]["field"], "wait_s", "{answer}");
    }
    let (status, answer) = admin
        .patch(
            &format!("/v1/licenses/{lid}"),
            json!({"policy": {"queue_ttl_s": 0}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let (status, updated) = admin
        .patch(
            &format!("/v1/licenses/{lid}"),
            json!({"policy": {"queue": "off", "queue_ttl_s": 30}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["policy"]["queue"], "off");
    assert_eq!(updated["policy"]["queue_ttl_s"], 30);
    ask(&c, &key, "a", false).await.unwrap();
    let details = ask(&c, &key, "b", true).await.unwrap_err();
    assert!(
        details.get("queue_position").is_none(),
        "no queue: {details}"
    );
    assert!(queue_of(&admin, &lid).await.is_empty());
}

/// A server killed with -9 while holders wait in the queue: after the restart every
/// waiter asking again within its `queue_ttl_s` has its place, in the same order, and
/// the freed seat still goes to the head.
async fn waiters_keep_their_places_across_kill_9(store_args: Vec<String>) {
    let token = init_store(&store_args, "Acme");
    let mut server = ServerProcess::start(&store_args).await;
    let admin = server.api(&token);
    let (key, lid) = floating(&admin, 1, json!({"queue_ttl_s": 300})).await;
    let c = server.api("");
    let a = ask(&c, &key, "a", false).await.unwrap();
    for (n, machine) in ["b", "c"].iter().enumerate() {
        let details = ask(&c, &key, machine, true).await.unwrap_err();
        assert_eq!(details["queue_position"], n as i64 + 1, "{details}");
    }
    server.kill_9();
    let server = ServerProcess::start(&store_args).await;
    let (admin, c) = (server.api(&token), server.api(""));
    assert_eq!(
        queue_of(&admin, &lid).await,
        ["b", "c"],
        "the places survived"
    );
    assert_eq!(
        ask(&c, &key, "c", true).await.unwrap_err()["queue_position"],
        2
    );
    check_in(&c, &key, &a).await;
    assert!(ask(&c, &key, "newcomer", false).await.is_err());
    ask(&c, &key, "b", true)
        .await
        .expect("the head gets the seat");
    assert_eq!(queue_of(&admin, &lid).await, ["c"]);
}

process_stores!(waiters_keep_their_places_across_kill_9);
