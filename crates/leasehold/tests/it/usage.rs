//! Usage analytics (DESIGN §8): a scripted day of the ledger read back as exact hour and
//! day buckets, its back-fill equal to what is computed live, refusals counted as they
//! happen (a holder once however often refused), the summary's advice, and CSV.

use crate::client::client;
use crate::harness::{both_stores, id, Api, Backend, TestServer};
use reqwest::StatusCode;
use serde_json::{json, Value};

both_stores!(
    a_scripted_day_reads_back_as_exact_buckets_live_and_rolled_up,
    takes_and_refusals_are_counted_as_they_happen,
    the_summary_advises_and_answers_csv,
);

/// Runs SQL against the server's database (test fixtures: the ledger's past).
async fn sql(s: &TestServer, text: &str) {
    match s.backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&s.database_url).await.unwrap();
            sqlx::raw_sql(text).execute(&pool).await.unwrap();
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&s.database_url).await.unwrap();
            sqlx::raw_sql(text).execute(&pool).await.unwrap();
        }
    }
}

const HOUR: i64 = 3_600_000;
const MINUTE: i64 = 60_000;

fn yesterday() -> chrono::NaiveDate {
    chrono::Utc::now().date_naive() - chrono::Duration::days(1)
}

fn day_start(day: chrono::NaiveDate) -> i64 {
    day.and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_millis()
}

/// A released lease of `machine` in the ledger, from `from` to `until` (ms).
fn past_lease(license_id: &str, n: usize, machine: &str, from: i64, until: i64) -> String {
    format!(
        "INSERT INTO seats (id, workspace_id, license_id, kind, fingerprint, os_user, instances, \
         created_at, last_seen_at, expires_at, sweep_at, released_at, release_reason) \
         SELECT '{license_id}-past-{n}', workspace_id, id, 'lease', '{machine}', 'u', '[\"1\"]', \
         {from}, {until}, {until}, {until}, {until}, 'checkin' FROM licenses WHERE id = '{license_id}';"
    )
}

async fn floating(admin: &Api, seats: i64, extra: Value) -> (String, String) {
    let mut fields = json!({"seat_model": "concurrent", "seats_total": seats});
    for (k, v) in extra.as_object().unwrap() {
        fields[k] = v.clone();
    }
    let license = admin.license_with(fields).await;
    (license["key"].as_str().unwrap().to_string(), id(&license))
}

async fn a_scripted_day_reads_back_as_exact_buckets_live_and_rolled_up(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let (_, lid) = floating(&admin, 3, json!({})).await;
    let day = yesterday();
    let d = day_start(day);
    let at = |hour: i64, minute: i64| d + hour * HOUR + minute * MINUTE;
    let mut script = String::new();
    for (n, (machine, from, until)) in [
        ("a", at(1, 0), at(3, 30)),
        ("b", at(2, 15), at(2, 45)),
        ("c", at(2, 30), at(5, 0)),
        ("a", at(4, 0), at(4, 30)),
    ]
    .into_iter()
    .enumerate()
    {
        script.push_str(&past_lease(&lid, n, machine, from, until));
    }
    // Refusals: x three times and y once at 02:xx, x twice at 03:xx. Counting began the
    // day before (an installation upgraded earlier).
    script.push_str(&format!(
        "INSERT INTO usage_denials (license_id, hour, holder, denials) VALUES \
         ('{lid}', {h2}, 'x\tu', 3), ('{lid}', {h2}, 'y\tu', 1), ('{lid}', {h3}, 'x\tu', 2); \
         INSERT INTO usage_queue (license_id, hour, peak_queued) VALUES ('{lid}', {h2}, 2); \
         UPDATE usage_state SET denials_since = {since}; \
         DELETE FROM usage_rollups WHERE license_id = '{lid}';",
        h2 = at(2, 0),
        h3 = at(3, 0),
        since = d - 24 * HOUR,
    ));
    sql(s, &script).await;

    let hours_path = format!("/v1/licenses/{lid}/usage?from={day}&to={day}&bucket=hour");
    let day_path = format!("/v1/licenses/{lid}/usage?from={day}&to={day}&bucket=day");
    let check = |hours: &Value, days: &Value| {
        let items = hours["items"].as_array().unwrap();
        assert_eq!(items.len(), 24, "{hours}");
        let row = |h: usize| {
            let i = &items[h];
            (
                i["peak_in_use"].as_i64().unwrap(),
                i["avg_in_use"].as_f64().unwrap(),
                i["holders"].as_i64().unwrap(),
                i["denials"].as_i64().unwrap(),
                i["denied_holders"].as_i64().unwrap(),
                i["peak_queued"].as_i64().unwrap(),
            )
        };
        assert_eq!(row(0), (0, 0.0, 0, 0, 0, 0));
        assert_eq!(row(1), (1, 1.0, 1, 0, 0, 0));
        assert_eq!(row(2), (3, 2.0, 3, 4, 2, 2));
        assert_eq!(row(3), (2, 1.5, 2, 2, 1, 0));
        assert_eq!(row(4), (2, 1.5, 2, 0, 0, 0));
        assert_eq!(row(5), (0, 0.0, 0, 0, 0, 0), "c ended as the hour began");
        let start: chrono::DateTime<chrono::Utc> =
            serde_json::from_value(items[2]["start"].clone()).unwrap();
        assert_eq!(start.timestamp_millis(), at(2, 0));
        let whole = &days["items"];
        assert_eq!(whole.as_array().unwrap().len(), 1, "{days}");
        assert_eq!(whole[0]["peak_in_use"], 3);
        assert_eq!(whole[0]["avg_in_use"], 0.25, "6 seat-hours over 24");
        assert_eq!(whole[0]["holders"], 3);
        assert_eq!(whole[0]["denials"], 6);
        assert_eq!(
            whole[0]["denied_holders"], 2,
            "x and y, however often refused"
        );
        assert_eq!(whole[0]["peak_queued"], 2);
    };
    let (live_hours, live_days) = (
        admin.ok_get(&hours_path).await,
        admin.ok_get(&day_path).await,
    );
    check(&live_hours, &live_days);

    // The back-fill rolls the day up from the ledger; the answers stay the same.
    let now = chrono::Utc::now().timestamp_millis();
    while s.state.store.roll_up_usage(now).await.unwrap() > 0 {}
    let (rolled_hours, rolled_days) = (
        admin.ok_get(&hours_path).await,
        admin.ok_get(&day_path).await,
    );
    assert_eq!(rolled_hours, live_hours);
    assert_eq!(rolled_days, live_days);
    // Rolling up again (another node, say) changes nothing.
    s.state.store.roll_up_usage(now).await.unwrap();
    assert_eq!(admin.ok_get(&hours_path).await, live_hours);

    // Before counting began, refusals are unknown.
    sql(
        s,
        &format!("UPDATE usage_state SET denials_since = {}", d + 24 * HOUR),
    )
    .await;
    let unknown = admin.ok_get(&day_path).await;
    assert_eq!(unknown["items"][0]["denials"], Value::Null, "{unknown}");
}

async fn takes_and_refusals_are_counted_as_they_happen(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let (key, lid) = floating(&admin, 1, json!({})).await;
    let c = client(s);
    let wants = |machine: &str, queue: bool| json!({"key": key, "fingerprint": machine, "os_user": "u", "instance": "1", "queue": queue});
    let (status, lease) = c.post("/v1/client/leases", wants("a", false)).await;
    assert_eq!(status, StatusCode::CREATED, "{lease}");
    for _ in 0..2 {
        let (status, _) = c.post("/v1/client/leases", wants("b", false)).await;
        assert_eq!(status, StatusCode::CONFLICT);
    }
    let (status, _) = c.post("/v1/client/leases", wants("c", true)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    // Asking again keeps c's place; c is refused a seat only when it leaves the queue
    // without one (a waiter served in time was not refused).
    let (status, _) = c.post("/v1/client/leases", wants("c", true)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, left) = c
        .post(
            "/v1/client/queue/leave",
            json!({"key": key, "fingerprint": "c", "os_user": "u"}),
        )
        .await;
    assert_eq!((status, &left["left"]), (StatusCode::OK, &json!(true)));

    // Yesterday and today, by day: robust to a day's end during the test.
    let from = yesterday();
    let usage = admin
        .ok_get(&format!("/v1/licenses/{lid}/usage?from={from}&bucket=day"))
        .await;
    let items = usage["items"].as_array().unwrap();
    let sum = |field: &str| {
        items
            .iter()
            .map(|i| i[field].as_i64().unwrap_or(0))
            .sum::<i64>()
    };
    let max = |field: &str| items.iter().map(|i| i[field].as_i64().unwrap_or(0)).max();
    assert_eq!(sum("denials"), 3, "{usage}");
    assert_eq!(max("peak_in_use"), Some(1), "{usage}");
    assert_eq!(max("peak_queued"), Some(1), "{usage}");
    assert_eq!(max("holders"), Some(1), "{usage}");
    let summary = admin.ok_get("/v1/usage/summary?days=2").await;
    let mine = summary["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["license_id"] == lid.as_str())
        .unwrap()
        .clone();
    assert_eq!(mine["denials"], 3, "{mine}");
    assert_eq!(mine["denied_holders"], 2, "b and c: {mine}");
    assert_eq!(mine["advice"]["action"], "increase", "{mine}");
    assert!(mine["advice"]["seats"].as_i64() > Some(1), "{mine}");
    assert!(lease["expires_at"].is_string(), "{lease}");
}

async fn the_summary_advises_and_answers_csv(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    // 40 seats bought for 20,000.00 USD a year; 12 used at most over the day.
    let cost =
        json!({"type": "subscription", "cost": {"amount_minor": 2_000_000, "currency": "USD"}});
    let (_, big) = floating(&admin, 40, cost).await;
    let (_, small) = floating(&admin, 2, json!({})).await;
    let d = day_start(yesterday());
    let mut script = String::new();
    for n in 0..12 {
        script.push_str(&past_lease(
            &big,
            n,
            &format!("m{n}"),
            d + HOUR,
            d + 2 * HOUR,
        ));
    }
    script.push_str(&past_lease(&small, 0, "s1", d + HOUR, d + 3 * HOUR));
    script.push_str(&past_lease(&small, 1, "s2", d + 2 * HOUR, d + 3 * HOUR));
    sql(s, &script).await;
    let summary = admin.ok_get("/v1/usage/summary?days=2").await;
    assert_eq!(summary["days"], 2);
    let items = summary["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{summary}");
    // The most money at stake first.
    assert_eq!(items[0]["license_id"], big.as_str(), "{summary}");
    let advice = &items[0]["advice"];
    assert_eq!(advice["action"], "reduce", "{summary}");
    assert_eq!(advice["seats"], 12, "{summary}");
    assert_eq!(
        advice["reason"],
        "peak 12 of 40 seats over 2 days; 28 seats ≈ 14,000 USD a year unused"
    );
    assert_eq!(items[0]["peak_in_use"], 12);
    assert_eq!(items[0]["utilisation"], 0.3);
    assert_eq!(items[0]["at_stake_minor"], 1_400_000);
    assert_eq!(items[1]["advice"]["action"], "keep", "{summary}");

    // A dedicated license counts the seats assigned and activated.
    let dedicated = admin.license(5).await;
    let seats = format!("/v1/licenses/{}/seats", id(&dedicated));
    for name in ["Ann", "Bob"] {
        admin
            .ok_post(&seats, json!({"assignee_name": name}), StatusCode::CREATED)
            .await;
    }
    let (status, _) = s
        .anonymous()
        .post(
            "/v1/client/activations",
            json!({"key": dedicated["key"], "fingerprint": "ws-9"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let summary = admin.ok_get("/v1/usage/summary?days=1").await;
    let row = summary["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["license_id"] == id(&dedicated).as_str())
        .unwrap()
        .clone();
    assert_eq!(
        row["peak_in_use"], 3,
        "two assignments and an activation: {row}"
    );
    assert_eq!(row["seat_model"], "dedicated");

    // CSV: the header names the fields, one row per license.
    let response = reqwest::Client::new()
        .get(format!("{}/v1/usage/summary?days=2&format=csv", s.base))
        .bearer_auth(admin.token.as_deref().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = response.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "a header and the three licenses: {text}");
    assert!(
        lines[0].starts_with(
            "license_id,application_id,licensed_to,seat_model,seats_total,peak_in_use,p95_in_use"
        ),
        "{text}"
    );
    assert!(lines[1].starts_with(&format!("{big},")), "{text}");
    assert!(lines[1].contains(",reduce,12,\"peak 12 of 40"), "{text}");
    let usage = reqwest::Client::new()
        .get(format!(
            "{}/v1/licenses/{small}/usage?from={}&to={}&bucket=hour&format=csv",
            s.base,
            yesterday(),
            yesterday()
        ))
        .bearer_auth(admin.token.as_deref().unwrap())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<&str> = usage.lines().collect();
    assert_eq!(
        lines[0],
        "license_id,start,peak_in_use,avg_in_use,denials,denied_holders,peak_queued,holders"
    );
    assert_eq!(lines.len(), 25, "{usage}");
    assert!(
        lines[3].ends_with(",2,2,,,0,2"),
        "02:00, before counting began: {usage}"
    );

    // Bad input names its field.
    for (path, field) in [
        ("/v1/usage/summary?days=0", "days"),
        ("/v1/usage/summary?format=xml", "format"),
        (
            &format!(
                "/v1/licenses/{small}/usage?from={}&to={}",
                chrono::Utc::now().date_naive(),
                yesterday()
            ) as &str,
            "from",
        ),
    ] {
        let (status, body) = admin.get(path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(body["error"]["details"]["field"], field, "{path}: {body}");
    }
}
