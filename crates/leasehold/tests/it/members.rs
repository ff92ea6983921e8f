//! Members have a lifecycle (DESIGN §11): an owner changes a member's role, disables,
//! enables or removes them; a disabled or removed member is signed out at once; the last
//! owner who can sign in stays. The audit log shows each role what it may read.

use crate::harness::{both_stores, id, Api, TestServer};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

both_stores!(
    an_owner_changes_disables_and_removes_members,
    a_disabled_or_removed_members_session_and_stream_end,
    the_last_owner_can_not_be_demoted_disabled_or_removed,
    two_owners_demoting_each_other_at_once_leave_one_owner,
    each_role_reads_the_audit_events_it_may,
);

const PASSWORD: &str = "member password";

async fn add(owner: &Api, email: &str, role: &str) -> String {
    let member = owner
        .ok_post(
            "/v1/members",
            json!({"email": email, "password": PASSWORD, "role": role}),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(member["disabled"], false, "{member}");
    id(&member)
}

async fn members(owner: &Api) -> Vec<Value> {
    owner
        .ok_get("/v1/members")
        .await
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn member(owner: &Api, email: &str) -> Option<Value> {
    members(owner)
        .await
        .into_iter()
        .find(|m| m["email"] == email)
}

async fn an_owner_changes_disables_and_removes_members(s: &TestServer) {
    let owner = s.workspace("Acme").await;
    let ann = add(&owner, "ann@example.com", "viewer").await;
    let path = format!("/v1/members/{ann}");

    let (status, changed) = owner.patch(&path, json!({"role": "assigner"})).await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["role"], "assigner");
    assert_eq!(changed["disabled"], false);

    let (status, changed) = owner.patch(&path, json!({"disabled": true})).await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["disabled"], true);
    assert_eq!(changed["role"], "assigner", "a role stays when disabled");
    assert!(changed["disabled_at"].is_string(), "{changed}");
    let listed = member(&owner, "ann@example.com").await.expect("listed");
    assert_eq!(listed["disabled"], true, "GET /v1/members shows disabled");

    let (status, changed) = owner.patch(&path, json!({"disabled": false})).await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["disabled"], false);
    assert!(changed["disabled_at"].is_null());

    // Bad input is a clear 400, a stranger's id a 404, and only owners may.
    for body in [
        json!({"role": "god"}),
        json!({"disabled": "yes"}),
        json!({"rank": "owner"}),
    ] {
        let (status, answer) = owner.patch(&path, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
    }
    let (status, _) = owner
        .patch("/v1/members/no-such-member", json!({"role": "viewer"}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let other = s.workspace("Other").await;
    let (status, _) = other.patch(&path, json!({"role": "owner"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no access across workspaces");
    let (status, _) = other.delete(&path).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no access across workspaces");
    let manager = owner.token("manager").await;
    let (status, _) = manager.patch(&path, json!({"role": "owner"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = manager.delete(&path).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (status, answer) = owner.delete(&path).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
    assert!(member(&owner, "ann@example.com").await.is_none());
    let (status, _) = owner.delete(&path).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The address is free again.
    add(&owner, "ann@example.com", "viewer").await;

    let actions: Vec<String> = owner.ok_get("/v1/events?limit=100").await["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["subject_id"] == ann.as_str())
        .map(|e| e["action"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        actions,
        [
            "member.removed",
            "member.updated",
            "member.updated",
            "member.updated",
            "member.created"
        ],
        "newest first"
    );
}

/// Reads an event stream until the server ends it; false if it is still open after
/// `seconds`.
async fn ends_within(mut stream: reqwest::Response, seconds: u64) -> bool {
    tokio::time::timeout(Duration::from_secs(seconds), async {
        while let Ok(Some(_)) = stream.chunk().await {}
    })
    .await
    .is_ok()
}

async fn a_disabled_or_removed_members_session_and_stream_end(s: &TestServer) {
    let owner = s.workspace("Acme").await;
    for (email, remove) in [("ann@example.com", false), ("bob@example.com", true)] {
        let member_id = add(&owner, email, "manager").await;
        let session = s.console_session(email, PASSWORD).await;
        let page = |path: &str| {
            session
                .client
                .get(format!("{}{path}", s.base))
                .header(reqwest::header::COOKIE, &session.cookie)
                .send()
        };
        assert_eq!(page("/").await.unwrap().status(), StatusCode::OK);
        let stream = page("/v1/events/stream").await.unwrap();
        assert_eq!(stream.status(), StatusCode::OK);

        let path = format!("/v1/members/{member_id}");
        let (status, answer) = if remove {
            owner.delete(&path).await
        } else {
            owner.patch(&path, json!({"disabled": true})).await
        };
        assert!(status.is_success(), "{status}: {answer}");

        // At once: the next page asks to sign in, the API refuses the cookie.
        let next = page("/").await.unwrap();
        assert_eq!(next.status(), StatusCode::SEE_OTHER, "{email}");
        assert_eq!(next.headers()["location"], "/login");
        assert_eq!(
            page("/v1/licenses").await.unwrap().status(),
            StatusCode::UNAUTHORIZED
        );
        // The open stream within 5 s (20 s of room on a busy machine).
        assert!(ends_within(stream, 20).await, "{email}: the stream ended");

        // Signing in again is refused (a disabled member is told why).
        let signed_in = session
            .client
            .post(format!("{}/login", s.base))
            .header(reqwest::header::COOKIE, "lh_login_csrf=t")
            .form(&[("_csrf", "t"), ("email", email), ("password", PASSWORD)])
            .send()
            .await
            .unwrap();
        let expected = if remove {
            "/login?error=invalid"
        } else {
            "/login?error=disabled"
        };
        assert_eq!(signed_in.headers()["location"], expected, "{email}");
    }
    // Enabled again, Ann signs in.
    let ann = member(&owner, "ann@example.com").await.expect("listed");
    owner
        .patch(
            &format!("/v1/members/{}", id(&ann)),
            json!({"disabled": false}),
        )
        .await;
    s.console_session("ann@example.com", PASSWORD).await;
}

async fn owner_id(owner: &Api, email: &str) -> String {
    id(&member(owner, email).await.expect("listed"))
}

async fn the_last_owner_can_not_be_demoted_disabled_or_removed(s: &TestServer) {
    let owner = s.workspace("Acme").await;
    let first = owner_id(&owner, "owner@example.com").await;
    let path = format!("/v1/members/{first}");
    for (method, body) in [
        ("PATCH", Some(json!({"role": "manager"}))),
        ("PATCH", Some(json!({"disabled": true}))),
        ("DELETE", None),
    ] {
        let (status, answer) = match body {
            Some(body) => owner.patch(&path, body).await,
            None => owner.delete(&path).await,
        };
        assert_eq!(status, StatusCode::CONFLICT, "{method}: {answer}");
        assert_eq!(answer["error"]["code"], "LAST_OWNER");
    }
    // A disabled owner does not count as the one who keeps the workspace.
    let second = add(&owner, "second@example.com", "owner").await;
    owner
        .patch(&format!("/v1/members/{second}"), json!({"disabled": true}))
        .await;
    let (status, answer) = owner.patch(&path, json!({"role": "viewer"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    // Enabled, the second owner takes over and the first may go.
    let (status, _) = owner
        .patch(&format!("/v1/members/{second}"), json!({"disabled": false}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, answer) = owner.patch(&path, json!({"role": "viewer"})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, answer) = owner.delete(&path).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
}

async fn two_owners_demoting_each_other_at_once_leave_one_owner(s: &TestServer) {
    let owner = s.workspace("Acme").await;
    let first = owner_id(&owner, "owner@example.com").await;
    let second = add(&owner, "second@example.com", "owner").await;
    for round in 0..5 {
        let demote = |member: &str| {
            let owner = owner.clone();
            let path = format!("/v1/members/{member}");
            async move { owner.patch(&path, json!({"role": "manager"})).await.0 }
        };
        let (a, b) = tokio::join!(demote(&first), demote(&second));
        let mut outcomes = [a, b];
        outcomes.sort();
        assert_eq!(
            outcomes,
            [StatusCode::OK, StatusCode::CONFLICT],
            "round {round}"
        );
        let owners = members(&owner)
            .await
            .into_iter()
            .filter(|m| m["role"] == "owner")
            .count();
        assert_eq!(owners, 1, "round {round}");
        for member in [&first, &second] {
            owner
                .patch(&format!("/v1/members/{member}"), json!({"role": "owner"}))
                .await;
        }
    }
}

/// The workspace's audit actions as `api` reads them, through the API and one license's log.
async fn actions(api: &Api) -> Vec<String> {
    api.all_pages("/v1/events?", 7)
        .await
        .iter()
        .map(|e| e["action"].as_str().unwrap_or_default().to_string())
        .collect()
}

async fn each_role_reads_the_audit_events_it_may(s: &TestServer) {
    let owner = s.workspace("Acme").await;
    let license = owner.license(2).await;
    add(&owner, "ann@example.com", "viewer").await;
    owner
        .ok_post(
            "/v1/webhooks",
            json!({"url": "https://hooks.example.com/leasehold", "events": ["license.updated"]}),
            StatusCode::CREATED,
        )
        .await;
    // (No license changes after this, so the webhook is never delivered.)
    let (status, answer) = owner
        .patch("/v1/notifications", json!({"emails": ["it@example.com"]}))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let viewer = owner.token("viewer").await;
    let assigner = owner.token("assigner").await;
    let manager = owner.token("manager").await;

    let admin_only = ["member.created", "token.created"];
    let manage_only = ["webhook.created", "workspace.notifications_updated"];
    let all = actions(&owner).await;
    for action in admin_only.iter().chain(&manage_only) {
        assert!(all.iter().any(|a| a == action), "an owner reads {action}");
    }
    assert!(all.iter().any(|a| a == "license.created"));
    for (role, api) in [("viewer", &viewer), ("assigner", &assigner)] {
        let read = actions(api).await;
        assert!(read.iter().any(|a| a == "license.created"), "{role}");
        for action in admin_only.iter().chain(&manage_only) {
            assert!(!read.iter().any(|a| a == action), "{role} reads {action}");
        }
        // Asked for by name, still not.
        let named = api.ok_get("/v1/events?action=member.created").await;
        assert_eq!(named["items"], json!([]), "{role}");
    }
    let read = actions(&manager).await;
    for action in manage_only {
        assert!(read.iter().any(|a| a == action), "a manager reads {action}");
    }
    for action in admin_only {
        assert!(
            !read.iter().any(|a| a == action),
            "a manager reads {action}"
        );
    }
    // One license's log reads the same for everyone.
    let lid = id(&license);
    let mine = owner.events(&lid, "").await;
    assert!(!mine.is_empty());
    assert_eq!(viewer.events(&lid, "").await.len(), mine.len());
}
