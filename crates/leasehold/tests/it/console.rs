//! The console and the portal in a real headless Chromium (Debian's chromium and
//! chromium-driver, driven over WebDriver). Each run saves screenshots of the main pages
//! to docs/screenshots/.

use crate::harness::{id, in_days, Backend, TestServer};
use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::StatusCode;
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const OWNER_PASSWORD: &str = "correct horse battery";
const SCREENSHOTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/screenshots");

struct Browser {
    client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
    base: String,
}

impl Browser {
    async fn start(base: &str) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver =
            Command::new(std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into()))
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("chromedriver (Debian package chromium-driver; .ci/run installs it)");
        let profile = tempfile::tempdir().unwrap();
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }
        });
        let capabilities = capabilities.as_object().unwrap().clone();
        let mut client = None;
        for _ in 0..100 {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(capabilities.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(c) => {
                    client = Some(c);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        Browser {
            client: client.expect("a WebDriver session"),
            driver,
            _profile: profile,
            base: base.to_string(),
        }
    }

    async fn goto(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap();
    }

    async fn set(&self, css: &str, value: &str) {
        let element = self.client.find(Locator::Css(css)).await.unwrap();
        self.client
            .execute(
                "arguments[0].value = arguments[1];",
                vec![serde_json::to_value(&element).unwrap(), json!(value)],
            )
            .await
            .unwrap();
    }

    /// Clicks a link or a form's button and waits until the page it leads to has loaded.
    /// Every click in the console navigates; without the wait, a check that the old page
    /// also passes (its heading, say) could run before the server has seen the request.
    async fn click(&self, css: &str) {
        self.mark_page().await;
        self.find_and_click(css).await;
        self.wait_for_next_page().await;
    }

    async fn find_and_click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }

    /// Marks the current document, so that `wait_for_next_page` can tell it from the next.
    async fn mark_page(&self) {
        self.client
            .execute("window.leaseholdTestOldPage = true;", vec![])
            .await
            .unwrap();
    }

    /// Waits until a document without the mark has loaded: the navigation is done.
    async fn wait_for_next_page(&self) {
        let script = "return document.readyState === 'complete' && !window.leaseholdTestOldPage;";
        let loaded = crate::harness::eventually(20, || async {
            // A script run mid-navigation may fail: that page is not loaded yet.
            matches!(
                self.client.execute(script, vec![]).await,
                Ok(serde_json::Value::Bool(true))
            )
        })
        .await;
        assert!(loaded, "the next page loaded: {}", self.page_text().await);
    }

    /// The element's text. Live regions re-render themselves, so an element found a moment
    /// ago may be gone: look it up again then.
    async fn text(&self, css: &str) -> String {
        for _ in 0..50 {
            if let Ok(element) = self.client.find(Locator::Css(css)).await {
                if let Ok(text) = element.text().await {
                    return text;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no element {css}")
    }

    async fn exists(&self, css: &str) -> bool {
        self.client.find(Locator::Css(css)).await.is_ok()
    }

    /// Waits (up to `seconds`) until the page's text contains `needle`.
    async fn wait_contains(&self, needle: &str, seconds: u64) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(seconds);
        while std::time::Instant::now() < deadline {
            if self.page_text().await.contains(needle) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    async fn page_text(&self) -> String {
        match self.client.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Waits (up to `seconds`) until the element's text is `expected`.
    /// Waits until the live region's event stream is open.
    async fn wait_live(&self, region: &str) -> bool {
        let css = format!("{region}[data-live='open']");
        for _ in 0..300 {
            if self.client.find(Locator::Css(&css)).await.is_ok() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    async fn wait_text(&self, css: &str, expected: &str, seconds: u64) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(seconds);
        while std::time::Instant::now() < deadline {
            if let Ok(element) = self.client.find(Locator::Css(css)).await {
                if element
                    .text()
                    .await
                    .map(|t| t.trim() == expected)
                    .unwrap_or(false)
                {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    async fn sign_in(&self, email: &str, password: &str) {
        self.goto("/login").await;
        self.set("#email", email).await;
        self.set("#password", password).await;
        self.click("form[action='/login'] button[type=submit]")
            .await;
        assert!(
            self.wait_text("h1", "Live usage", 10).await,
            "signed in: {}",
            self.page_text().await
        );
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        std::fs::create_dir_all(SCREENSHOTS).unwrap();
        std::fs::write(format!("{SCREENSHOTS}/{name}.png"), png).unwrap();
    }

    /// Clicks a button whose form asks for confirmation, and accepts.
    async fn click_and_confirm(&self, css: &str) {
        self.mark_page().await;
        self.find_and_click(css).await;
        self.client.accept_alert().await.unwrap();
        self.wait_for_next_page().await;
    }

    async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_tracks_a_license_and_watches_seats_live() {
    let s = TestServer::start(Backend::Sqlite).await;
    let api = s.workspace("Acme").await;
    let app = api.application("AutoCAD").await;
    let b = Browser::start(&s.base).await;
    b.goto("/login").await;
    b.screenshot("login").await;
    b.sign_in("owner@example.com", OWNER_PASSWORD).await;

    // The workspace's signing key, in both forms (hex for Keygen clients, DESIGN §9).
    b.goto("/applications").await;
    let hex = b.text("#signing-key code[data-key='hex']").await;
    assert_eq!(hex.len(), 64, "{hex}");
    assert!(hex.chars().all(|c| c.is_ascii_hexdigit()), "{hex}");
    let base64 = b.text("#signing-key code[data-key='base64']").await;
    assert_eq!(base64.len(), 44, "{base64}");

    // Add a license with the full form.
    b.goto(&format!("/applications/{app}")).await;
    b.click("a.button[href^='/licenses/new']").await;
    b.set("#f-to", "Acme Design").await;
    b.set("#f-type", "subscription").await;
    b.set("#f-seats", "2").await;
    b.set("#f-version", "2025").await;
    b.set("#f-cost", "1299.00").await;
    // Dates relative to today, so that the reminders they make stay upcoming.
    let [bought, expires, maint] = [-320, 45, 20].map(|days| in_days(days).to_string());
    b.set("#f-bought", &bought).await;
    b.set("#f-expires", &expires).await;
    b.set("#f-maint", &maint).await;
    b.set("#f-po", "PO-77").await;
    b.set("#f-idle", "900").await;
    b.set("#f-idle-reclaim", "always").await;
    b.click("form[action='/licenses'] button[type=submit]")
        .await;
    assert!(b.wait_text("h1", "License created", 10).await);
    let key = b.text("#new-key").await;
    assert_eq!(key.len(), 29, "the full generated key is shown once: {key}");
    b.click("a.button[href^='/licenses/']").await;
    let license_url = b.client.current_url().await.unwrap().to_string();
    let lid = license_url.rsplit('/').next().unwrap().to_string();
    let card = b.text("article.card").await;
    for expected in [
        "•••••-•••••-•••••-•••••-",
        "subscription",
        "0 / 2",
        "2025",
        bought.as_str(),
        "PO-77",
        "1299.00 USD",
        expires.as_str(),
        maint.as_str(),
    ] {
        assert!(card.contains(expected), "the card shows {expected}: {card}");
    }
    assert!(!card.contains(&key), "the card masks the key");
    let policy = &api.ok_get(&format!("/v1/licenses/{lid}")).await["policy"];
    assert_eq!(
        (&policy["idle_timeout_s"], &policy["idle_reclaim"]),
        (&json!(900), &json!("always")),
        "the form sets the idle policy: {policy}"
    );

    // Assign seats until the license is over-allocated.
    for (taken, (name, device)) in [("Ann", "WS-01"), ("Bob", "WS-02")].into_iter().enumerate() {
        b.set("#a-name", name).await;
        b.set("#a-device", device).await;
        b.click("#assign button[type=submit]").await;
        assert!(
            b.wait_text("#seats-figure", &format!("{} / 2", taken + 1), 10)
                .await
        );
    }
    b.set("#a-name", "Cy").await;
    b.click("#assign button[type=submit]").await;
    assert!(
        b.wait_text(
            "#assign-error",
            "Seat over-allocated: reclaim a seat or raise Seats Total",
            10
        )
        .await,
        "the over-allocation message: {}",
        b.page_text().await
    );
    assert_eq!(b.text("#seats-figure").await, "2 / 2");

    // Reclaim one, with confirmation; the row stays with its reclaimed date.
    b.click_and_confirm("#ledger form[action$='/reclaim'] button")
        .await;
    assert!(b.wait_text("#seats-figure", "1 / 2", 10).await);
    let ledger = b.text("#ledger").await;
    assert!(
        ledger.contains(&chrono::Utc::now().date_naive().to_string())
            && ledger.contains("reclaimed"),
        "{ledger}"
    );

    // Server-side validation shows beside the field.
    b.goto(&format!("/licenses/{lid}/edit")).await;
    b.set("#f-seats", "0").await;
    b.click("form[action$='/edit'] button[type=submit]").await;
    assert!(
        b.wait_text("#err-seats_total", "seats_total: must be at least 1", 10)
            .await
    );

    // A contact holds a seat, is offboarded, and the seat says so.
    b.goto("/contacts").await;
    b.set("#c-name", "Dana").await;
    b.set("#c-email", "dana@example.com").await;
    b.click("form[action='/contacts'] button[type=submit]")
        .await;
    assert!(b.wait_contains("dana@example.com", 10).await);
    b.goto(&format!("/licenses/{lid}")).await;
    let dana = b
        .client
        .find(Locator::XPath(
            "//select[@id='a-contact']/option[text()='Dana']",
        ))
        .await
        .unwrap();
    let dana_id = dana.attr("value").await.unwrap().unwrap();
    b.set("#a-contact", &dana_id).await;
    b.click("#assign button[type=submit]").await;
    assert!(b.wait_text("#seats-figure", "2 / 2", 10).await);
    b.goto("/contacts").await;
    b.click_and_confirm(&format!(
        "form[action='/contacts/{dana_id}/terminate'] button"
    ))
    .await;
    assert!(
        b.wait_text(
            &format!("tr[data-contact='{dana_id}'] .badge"),
            "Terminated",
            10
        )
        .await
    );
    b.screenshot("contacts").await;
    b.goto(&format!("/licenses/{lid}")).await;
    assert!(b
        .text("#ledger")
        .await
        .contains("Contact terminated — reclaim"));
    b.screenshot("license").await;
    b.goto(&format!("/applications/{app}")).await;
    b.screenshot("application").await;

    // Live: a client takes and releases a lease; the page follows without a reload.
    let floating = api
        .license_with(json!({"seat_model": "concurrent", "seats_total": 3}))
        .await;
    let fid = id(&floating);
    b.goto(&format!("/licenses/{fid}")).await;
    assert!(b.wait_text("#seats-figure", "0 / 3", 10).await);
    assert!(b.wait_live("#seats").await, "the live stream connected");
    let c = s.anonymous();
    let lease = c
        .ok_post(
            "/v1/client/leases",
            json!({"key": floating["key"], "fingerprint": "m1", "os_user": "ann", "identifier": "ANN-PC", "instance": "1"}),
            StatusCode::CREATED,
        )
        .await;
    assert!(
        b.wait_text("#seats-figure", "1 / 3", 10).await,
        "the checkout shows up live"
    );
    assert!(b.text("#seats").await.contains("ANN-PC"));
    b.screenshot("live").await;
    c.call(
        reqwest::Method::DELETE,
        &format!("/v1/client/leases/{}/instances/1", id(&lease)),
        Some(json!({"key": floating["key"]})),
    )
    .await;
    assert!(
        b.wait_text("#seats-figure", "0 / 3", 10).await,
        "the release shows up live"
    );

    // Full, and someone waits in the queue: the page shows who, live.
    let mut full = Vec::new();
    for machine in ["m3", "m4", "m5"] {
        let lease = c
            .ok_post(
                "/v1/client/leases",
                json!({"key": floating["key"], "fingerprint": machine, "os_user": "u",
                       "identifier": format!("{}-PC", machine.to_uppercase()), "instance": "1"}),
                StatusCode::CREATED,
            )
            .await;
        full.push(id(&lease));
    }
    let (status, refused) = c
        .post(
            "/v1/client/leases",
            json!({"key": floating["key"], "fingerprint": "m9", "os_user": "cy",
                   "identifier": "CY-LAPTOP", "instance": "1", "queue": true}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert!(
        b.wait_text("#queue-figure", "1 waiting", 10).await,
        "the queue shows up live"
    );
    assert!(b.text("#queue").await.contains("CY-LAPTOP"));
    b.client
        .execute(
            "document.getElementById('queue-figure').scrollIntoView();",
            vec![],
        )
        .await
        .unwrap();
    b.screenshot("queue").await;
    // CY gives up waiting: a refusal in the license's usage.
    c.ok_post(
        "/v1/client/queue/leave",
        json!({"key": floating["key"], "fingerprint": "m9", "os_user": "cy"}),
        StatusCode::OK,
    )
    .await;
    for lease in full {
        c.call(
            reqwest::Method::DELETE,
            &format!("/v1/client/leases/{lease}/instances/1"),
            Some(json!({"key": floating["key"]})),
        )
        .await;
    }
    assert!(b.wait_text("#seats-figure", "0 / 3", 10).await);

    // A laptop borrows a seat for a trip: shown live with its end date; an admin frees it
    // only by forcing.
    api.patch(
        &format!("/v1/licenses/{fid}"),
        json!({"policy": {"max_borrow_days": 14}}),
    )
    .await;
    let lent = c
        .ok_post(
            "/v1/client/borrows",
            json!({"key": floating["key"], "fingerprint": "m7", "os_user": "dan",
                   "identifier": "DAN-LAPTOP", "days": 14}),
            StatusCode::CREATED,
        )
        .await;
    assert!(
        b.wait_text("#seats-figure", "1 / 3", 10).await,
        "the borrow shows up live"
    );
    let holders = b.text("#seats").await;
    assert!(
        holders.contains("DAN-LAPTOP") && holders.contains("borrowed until"),
        "{holders}"
    );
    b.screenshot("borrow").await;
    b.goto(&format!("/licenses/{fid}")).await;
    assert!(b.text("#ledger").await.contains("borrow until"));
    b.click_and_confirm(&format!(
        "form[action='/seats/{}/reclaim'] button",
        id(&lent)
    ))
    .await;
    assert!(
        b.wait_text("#seats-figure", "0 / 3", 10).await,
        "the forced reclaim frees the seat"
    );

    b.goto("/").await;
    assert!(
        b.wait_live("#live").await,
        "the overview's stream connected"
    );
    c.ok_post(
        "/v1/client/leases",
        json!({"key": floating["key"], "fingerprint": "m2", "os_user": "bob", "identifier": "BOB-PC", "instance": "1"}),
        StatusCode::CREATED,
    )
    .await;
    assert!(
        b.wait_text(&format!("[data-seats-figure='{fid}']"), "1 / 3", 10)
            .await,
        "the overview follows too"
    );
    b.screenshot("overview").await;
    // At phone width the page still works: nothing overflows the viewport sideways.
    // Usage against cost: the license page's chart (drawn by the server), and /usage.
    b.goto(&format!("/licenses/{fid}")).await;
    let js = |script: &str| {
        let script = script.to_string();
        let b = &b;
        async move { b.client.execute(&script, vec![]).await.unwrap() }
    };
    assert_eq!(
        js("return document.querySelectorAll('#usage-chart rect.bar').length;").await,
        json!(30),
        "a bar a day"
    );
    let today = js(
        "var bars = document.querySelectorAll('#usage-chart rect.bar'); \
                    return parseFloat(bars[bars.length - 1].getAttribute('height'));",
    )
    .await;
    assert!(
        today.as_f64().unwrap_or(0.0) > 0.0,
        "today's peak is drawn: {today}"
    );
    assert_eq!(
        js("return document.querySelectorAll('#usage-chart line.bought').length;").await,
        json!(1)
    );
    assert!(
        js("return document.querySelectorAll('#usage-chart polygon.refused').length;")
            .await
            .as_i64()
            >= Some(1),
        "the day someone was refused (CY-LAPTOP, who left the queue) is marked"
    );
    js("document.getElementById('usage').scrollIntoView();").await;
    b.screenshot("usage-chart").await;
    b.goto("/usage").await;
    assert!(b.wait_contains("Usage against cost", 10).await);
    let row = b.text(&format!("tr[data-license='{fid}']")).await;
    assert!(
        row.contains("increase to"),
        "refusals ask for more seats: {row}"
    );
    assert!(b.text("#periods").await.contains("Download CSV"));
    b.screenshot("usage").await;

    b.client.set_window_size(390, 844).await.unwrap();
    for path in [format!("/licenses/{lid}"), "/usage".to_string()] {
        b.goto(&path).await;
        let overflow = b
            .client
            .execute(
                "return document.documentElement.scrollWidth - window.innerWidth;",
                vec![],
            )
            .await
            .unwrap();
        assert!(
            overflow.as_i64().unwrap_or(1) <= 0,
            "horizontal overflow at phone width on {path}: {overflow}"
        );
    }
    b.goto(&format!("/licenses/{lid}")).await;
    b.screenshot("phone").await;
    b.client.set_window_size(1280, 1000).await.unwrap();

    b.goto("/reminders").await;
    assert!(b.wait_contains("Maintenance expiry", 10).await);
    b.screenshot("reminders").await;
    b.goto("/audit").await;
    assert!(b.wait_contains("seat.reclaimed", 10).await);
    b.screenshot("audit").await;
    b.close().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_manages_members_and_a_disabled_member_is_signed_out() {
    let s = TestServer::start(Backend::Sqlite).await;
    let api = s.workspace("Acme").await;
    let b = Browser::start(&s.base).await;
    b.sign_in("owner@example.com", OWNER_PASSWORD).await;
    b.click("nav a[href='/members']").await;
    assert!(b.wait_text("h1", "Members", 10).await);
    b.set("#m-email", "ann@example.com").await;
    b.set("#m-password", "ann's password").await;
    b.set("#m-role", "assigner").await;
    b.click("form[action='/members'] button[type=submit]").await;
    let listed = |email: &'static str| {
        let api = api.clone();
        async move {
            api.ok_get("/v1/members")
                .await
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["email"] == email)
                .cloned()
        }
    };
    let ann = listed("ann@example.com").await.expect("Ann was added");
    assert_eq!(ann["role"], "assigner");
    let ann_id = id(&ann);
    let row = format!("tr[data-member='{ann_id}']");
    assert!(b.text(&row).await.contains("Active"));

    b.set(&format!("#role-{ann_id}"), "manager").await;
    b.click(&format!("{row} td:nth-child(2) button")).await;
    assert_eq!(listed("ann@example.com").await.unwrap()["role"], "manager");

    // Ann is signed in elsewhere; disabling her signs her out at once.
    let ann_session = s.console_session("ann@example.com", "ann's password").await;
    b.click_and_confirm(&format!("{row} form[data-confirm^='Disable'] button"))
        .await;
    assert!(b.text(&row).await.contains("Disabled"));
    assert_eq!(listed("ann@example.com").await.unwrap()["disabled"], true);
    let page = ann_session
        .client
        .get(format!("{}/", s.base))
        .header(reqwest::header::COOKIE, &ann_session.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.headers()["location"], "/login", "Ann is signed out");
    b.screenshot("members").await;

    b.click_and_confirm(&format!("{row} form[action$='/delete'] button"))
        .await;
    assert!(b.wait_text("h1", "Members", 10).await);
    assert!(!b.exists(&row).await, "Ann is removed");
    assert!(listed("ann@example.com").await.is_none());

    // The last owner can't remove themselves: the console says why.
    let me = id(&listed("owner@example.com").await.unwrap());
    b.click_and_confirm(&format!(
        "tr[data-member='{me}'] form[action$='/delete'] button"
    ))
    .await;
    assert!(
        b.wait_contains("last owner", 10).await,
        "{}",
        b.page_text().await
    );
    b.close().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_is_not_offered_edits_and_forged_posts_are_refused() {
    let s = TestServer::start(Backend::Sqlite).await;
    let api = s.workspace("Acme").await;
    let license = api.license(3).await;
    let lid = id(&license);
    api.ok_post(
        "/v1/members",
        json!({"email": "viewer@example.com", "password": "viewer password", "role": "viewer"}),
        StatusCode::CREATED,
    )
    .await;
    let b = Browser::start(&s.base).await;
    b.sign_in("viewer@example.com", "viewer password").await;
    b.goto(&format!("/licenses/{lid}")).await;
    assert!(b.exists("#seats-figure").await, "a viewer sees the license");
    assert!(!b.exists("#assign").await, "no Assign Seat form");
    assert!(!b.exists("a[href$='/edit']").await, "no edit pencil");
    assert!(!b.exists("form[action$='/delete']").await, "no delete");
    assert!(!b.exists("form[action$='/reveal']").await, "no reveal");
    b.goto("/applications").await;
    assert!(!b.exists("form[action='/applications']").await);

    // Forge the assign form with the viewer's own session and CSRF token: refused.
    let session = b.client.get_named_cookie("lh_session").await.unwrap();
    let csrf = b
        .client
        .find(Locator::Css("input[name=_csrf]"))
        .await
        .unwrap()
        .attr("value")
        .await
        .unwrap()
        .unwrap();
    let forged = reqwest::Client::new()
        .post(format!("{}/licenses/{lid}/seats", s.base))
        .header("cookie", format!("lh_session={}", session.value()))
        .form(&[("_csrf", csrf.as_str()), ("assignee_name", "Mallory")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    // Without the CSRF token even an owner's session is refused.
    let no_csrf = reqwest::Client::new()
        .post(format!("{}/licenses/{lid}/seats", s.base))
        .header("cookie", format!("lh_session={}", session.value()))
        .form(&[("assignee_name", "Mallory")])
        .send()
        .await
        .unwrap();
    assert_eq!(no_csrf.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        api.ok_get(&format!("/v1/licenses/{lid}")).await["seats_used"],
        0
    );
    b.close().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_shows_only_its_own_key_and_releases_a_seat() {
    let s = TestServer::start(Backend::Sqlite).await;
    let api = s.workspace("Acme").await;
    let mine = api.license(2).await;
    let other = api.license(2).await;
    let c = s.anonymous();
    for (license, machine) in [(&mine, "MY-LAPTOP"), (&other, "SOMEONE-ELSE")] {
        c.ok_post(
            "/v1/client/activations",
            json!({"key": license["key"], "fingerprint": machine.to_lowercase(), "identifier": machine}),
            StatusCode::CREATED,
        )
        .await;
    }
    let b = Browser::start(&s.base).await;
    b.goto("/portal").await;
    b.set("#portal-key", "WRONG-KEY").await;
    b.click("form[action='/portal'] button").await;
    assert!(b.wait_contains("No license has this key", 10).await);
    b.set("#portal-key", mine["key"].as_str().unwrap()).await;
    b.click("form[action='/portal'] button").await;
    assert!(b.wait_contains("MY-LAPTOP", 10).await);
    let page = b.text("#portal-seats").await;
    assert!(page.contains("MY-LAPTOP"), "{page}");
    assert!(
        !b.page_text().await.contains("SOMEONE-ELSE"),
        "another key's seats are never shown"
    );
    assert_eq!(b.text("#portal-figure").await, "1 / 2");
    b.screenshot("portal").await;
    b.click_and_confirm("#portal-seats form button").await;
    assert!(b.wait_text("#portal-figure", "0 / 2", 10).await);
    assert!(b.wait_contains("The seat is free", 10).await);
    assert_eq!(
        api.ok_get(&format!("/v1/licenses/{}", id(&other))).await["seats_used"],
        1
    );

    // Signing out takes the page's own form: a request without its CSRF token is refused
    // and the session goes on.
    let forged = b
        .client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch('/portal/logout', {method: 'POST', redirect: 'manual',
                 headers: {'Content-Type': 'application/x-www-form-urlencoded'},
                 body: '_csrf=forged'}).then(r => done(r.status), e => done(String(e)));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(forged, json!(403));
    b.goto("/portal").await;
    assert!(
        b.wait_text("#portal-figure", "0 / 2", 10).await,
        "still signed in"
    );
    b.click("form[action='/portal/logout'] button").await;
    b.goto("/portal").await;
    assert!(
        b.exists("#portal-key").await,
        "signed out: the key form again"
    );
    b.close().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_adds_a_webhook_watches_its_deliveries_and_tests_smtp() {
    let sink = crate::sinks::SmtpSink::start().await;
    let receiver = crate::sinks::Receiver::start(0, false).await;
    let smtp = sink.url.clone();
    let s = TestServer::start_with(Backend::Sqlite, move |settings| {
        settings.notify.webhook_allow_local = true;
        settings.notify.poll_interval = Duration::from_millis(50);
        settings.notify.smtp_url = Some(smtp);
    })
    .await;
    let api = s.workspace("Acme").await;
    let b = Browser::start(&s.base).await;
    b.sign_in("owner@example.com", OWNER_PASSWORD).await;
    b.click("nav a[href='/notifications']").await;
    assert!(b.wait_text("h1", "Notifications", 10).await);

    // Add a webhook: its secret is shown once.
    b.set("#w-url", &receiver.url).await;
    b.click("form[action='/webhooks'] button[type=submit]")
        .await;
    assert!(
        b.wait_contains("shown this once", 10).await,
        "{}",
        b.page_text().await
    );
    let secret = b.text("#webhook-secret").await;
    assert!(secret.starts_with("whsec_"), "{secret}");

    // An event reaches the receiver, signed with that secret, and the log shows it.
    let license = api.license(1).await;
    let got = receiver
        .wait_for(|got| got.iter().any(|r| r.json["type"] == "license.created"))
        .await;
    assert!(crate::sinks::signature_valid(&secret, &got[0]));
    b.goto("/notifications").await;
    b.click("tr[data-webhook] a[href^='/webhooks/']").await;
    assert!(b.wait_contains("license.created", 10).await);
    assert!(
        b.wait_contains("delivered", 10).await,
        "{}",
        b.page_text().await
    );
    b.screenshot("webhooks").await;
    b.click("tr[data-delivery] form button[type=submit]").await;
    let again = receiver.wait_for(|got| got.len() >= 2).await;
    assert_eq!(
        again[1].id_header, got[0].id_header,
        "a re-send keeps the id"
    );
    assert_eq!(again[1].json["data"]["license_id"], id(&license));

    // Email settings and the SMTP test.
    b.goto("/notifications").await;
    b.set("#n-emails", "it@example.com, finance@example.com")
        .await;
    b.click("form[action='/notifications'] button[type=submit]")
        .await;
    assert!(b.wait_text("h1", "Notifications", 10).await);
    let settings = api.ok_get("/v1/notifications").await;
    assert_eq!(
        settings["emails"],
        json!(["it@example.com", "finance@example.com"])
    );
    b.click("#smtp-test").await;
    assert!(
        b.wait_contains("Test email sent to owner@example.com", 10)
            .await
    );
    let mails = sink.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, vec!["owner@example.com".to_string()]);
    b.screenshot("notifications").await;
    b.close().await;
    s.stop().await;
}
