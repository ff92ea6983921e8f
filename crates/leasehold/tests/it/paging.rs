//! The console's lists show every row: sets the business bounds (live seats, licenses,
//! contacts to pick from) whole, logs (the audit log, a license's released seats, the
//! contacts list, reminders, deliveries) a page at a time with a link to the next. They
//! used to stop at 200 rows without a word, and a license's oldest live seat fell off its
//! own page.

use crate::harness::{both_stores, id, ConsoleSession, TestServer};
use reqwest::StatusCode;
use serde_json::json;
use std::collections::HashSet;

both_stores!(a_long_ledger_audit_log_and_contact_list_are_paged);

const PASSWORD: &str = "correct horse battery";

/// The page's HTML.
async fn html(s: &TestServer, session: &ConsoleSession, path: &str) -> String {
    let answer = session
        .client
        .get(format!("{}{path}", s.base))
        .header(reqwest::header::COOKIE, &session.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK, "{path}");
    answer.text().await.unwrap()
}

/// The values of `attribute="…"` on the page, in order.
fn values(page: &str, attribute: &str) -> Vec<String> {
    page.split(&format!("{attribute}=\""))
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(String::from)
        .collect()
}

/// The page's "Older" link, if any.
fn next_link(page: &str) -> Option<String> {
    page.split("rel=\"next\" href=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .map(|href| href.replace("&amp;", "&"))
}

/// Reads `path` and every page after it; answers each page's `attribute` values.
async fn every_page(
    s: &TestServer,
    session: &ConsoleSession,
    path: &str,
    attribute: &str,
) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut next = Some(path.to_string());
    while let Some(path) = next {
        let page = html(s, session, &path).await;
        pages.push(values(&page, attribute));
        next = next_link(&page);
        assert!(pages.len() < 50, "the pages end");
    }
    pages
}

async fn a_long_ledger_audit_log_and_contact_list_are_paged(s: &TestServer) {
    let api = s.workspace("Acme").await;
    let license = api
        .license_with(json!({"seat_model": "concurrent", "seats_total": 2}))
        .await;
    let (key, lid) = (license["key"].as_str().unwrap(), id(&license));
    let c = s.anonymous();
    let take = |machine: &str| json!({"key": key, "fingerprint": machine, "os_user": "u", "instance": "1"});
    // The oldest seat stays held while 205 others come and go after it.
    let held = c
        .ok_post("/v1/client/leases", take("held"), StatusCode::CREATED)
        .await;
    for _ in 0..205 {
        let lease = c
            .ok_post("/v1/client/leases", take("churn"), StatusCode::CREATED)
            .await;
        c.call(
            reqwest::Method::DELETE,
            &format!("/v1/client/leases/{}/instances/1", id(&lease)),
            Some(json!({"key": key})),
        )
        .await;
    }
    for n in 0..105 {
        api.ok_post(
            "/v1/contacts",
            json!({"name": format!("Person {n:03}")}),
            StatusCode::CREATED,
        )
        .await;
    }
    let session = s.console_session("owner@example.com", PASSWORD).await;

    // The license page: its oldest live seat is a live holder on every page of the ledger.
    let path = format!("/licenses/{lid}");
    let first = html(s, &session, &path).await;
    assert!(
        values(&first, "data-holder").contains(&id(&held)),
        "the held seat is live"
    );
    let overview = html(s, &session, "/").await;
    assert!(values(&overview, "data-holder").contains(&id(&held)));
    let pages = every_page(s, &session, &path, "data-seat").await;
    assert!(pages.len() >= 3, "{} pages", pages.len());
    let mut released = HashSet::new();
    for page in &pages {
        assert_eq!(page.first(), Some(&id(&held)), "live seats lead every page");
        assert!(page.len() <= 101);
        released.extend(page.iter().skip(1).cloned());
    }
    assert_eq!(released.len(), 205, "every released seat is on one page");

    // The audit log: every event the API lists, each once.
    let events = api.all_pages("/v1/events?", 200).await;
    let pages = every_page(s, &session, "/audit", "data-event").await;
    let listed: Vec<String> = pages.concat();
    assert_eq!(listed.len(), events.len());
    assert_eq!(listed.iter().collect::<HashSet<_>>().len(), events.len());
    // Filtered, the next page keeps the filter.
    let pages = every_page(
        s,
        &session,
        &format!("/audit?license_id={lid}&action=seat.released"),
        "data-event",
    )
    .await;
    assert_eq!(pages.concat().len(), 205);

    // Contacts: 100 a page.
    let pages = every_page(s, &session, "/contacts", "data-contact").await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [100, 5]);
}
