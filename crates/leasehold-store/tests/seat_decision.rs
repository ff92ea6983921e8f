//! The store's seat decision, specified against the `Store` trait and run on both
//! backends: SQLite (file-backed, so its seat writer decides) and PostgreSQL (its own new
//! database on the local server; `LEASEHOLD_TEST_PG_URL` names another).
//!
//! Each case is one of the decision's edges: a holder joining its live lease, a full
//! license, an admin release's cooldown, a holder whose lease lapsed unswept, a full
//! license whose seats crashed apps left behind, a license out of force, and an operation
//! refused inside a batch of concurrent ones that must not take the others down.

use leasehold_core::{LeasePolicy, LicenseStatus, LicenseType, Role, SeatModel};
use leasehold_store::{
    Actor, LeaseHolder, License, LicenseChange, NewApplication, NewLicense, NewMember, NewToken,
    NewWorkspace, Seat, Store, StoreError, StoreOptions,
};
use std::sync::Arc;

struct Fixture {
    store: Arc<dyn Store>,
    workspace_id: String,
    application_id: String,
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<String>,
}

fn pg_admin_url() -> String {
    std::env::var("LEASEHOLD_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

impl Fixture {
    async fn sqlite() -> Fixture {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let url = format!("sqlite://{}", dir.path().join("leasehold.db").display());
        Fixture::on(&url, Some(dir), None).await
    }

    async fn postgres() -> Fixture {
        use sqlx::Connection;
        let name = format!("lh_store_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&pg_admin_url())
            .await
            .expect("PostgreSQL for tests");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("a test database");
        admin.close().await.ok();
        let url = match pg_admin_url().rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => panic!("LEASEHOLD_TEST_PG_URL names no database"),
        };
        Fixture::on(&url, None, Some(name)).await
    }

    async fn on(url: &str, dir: Option<tempfile::TempDir>, pg_name: Option<String>) -> Fixture {
        let store = leasehold_store::open(url, &StoreOptions::default())
            .await
            .expect("the store opens");
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let workspace = store
            .create_workspace(
                NewWorkspace {
                    name: "Seats".into(),
                    slug: format!("seats-{tag}"),
                    currency: "USD".into(),
                    reminder_lead_days: vec![30],
                },
                NewMember {
                    email: format!("owner-{tag}@example.com"),
                    password_hash: "not-a-hash".into(),
                    role: Role::Owner,
                },
                NewToken {
                    name: "setup".into(),
                    role: Role::Owner,
                    token_hash: format!("hash-{tag}"),
                },
            )
            .await
            .expect("a workspace");
        let application = store
            .create_application(
                &Actor::system(),
                &workspace.id,
                NewApplication {
                    name: "CAD".into(),
                    vendor: None,
                    deployment_model: leasehold_core::DeploymentModel::OnPremise,
                },
            )
            .await
            .expect("an application");
        Fixture {
            store,
            workspace_id: workspace.id,
            application_id: application.id,
            _dir: dir,
            pg_name,
        }
    }

    async fn license(&self, model: SeatModel, seats: i64, policy: LeasePolicy) -> Arc<License> {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let license = self
            .store
            .create_license(
                &Actor::system(),
                &self.workspace_id,
                NewLicense {
                    application_id: self.application_id.clone(),
                    key_enc: tag.as_bytes().to_vec(),
                    key_hash: format!("key-{tag}"),
                    key_masked: "•••••".into(),
                    fields: LicenseChange {
                        licensed_to: "Acme".into(),
                        vendor: None,
                        license_type: LicenseType::Subscription,
                        status: LicenseStatus::Active,
                        seat_model: model,
                        seats_total: seats,
                        version: None,
                        cost: None,
                        purchased_on: None,
                        expires_on: None,
                        maintenance_expires_on: None,
                        po_number: None,
                        notes: None,
                        policy,
                    },
                },
            )
            .await
            .expect("a license");
        Arc::new(license)
    }

    /// A floating seat for `machine`'s `instance` (OS user alice), which must be given.
    async fn take(&self, license: &Arc<License>, machine: &str, instance: &str) -> (Seat, bool) {
        self.store
            .take_lease(license, &holder(machine, instance))
            .await
            .unwrap_or_else(|e| panic!("{machine} takes a seat: {e}"))
    }

    async fn seats_used(&self, license: &License) -> i64 {
        self.store
            .license(&self.workspace_id, &license.id)
            .await
            .expect("the license")
            .seats_used
    }

    async fn done(self) {
        drop(self.store);
        if let Some(name) = self.pg_name {
            use sqlx::Connection;
            if let Ok(mut admin) = sqlx::PgConnection::connect(&pg_admin_url()).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await;
            }
        }
    }
}

fn holder(machine: &str, instance: &str) -> LeaseHolder {
    LeaseHolder {
        fingerprint: machine.into(),
        os_user: "alice".into(),
        identifier: None,
        instance: instance.into(),
        queue: false,
    }
}

fn policy() -> LeasePolicy {
    LeasePolicy {
        release_cooldown_s: 0,
        ..LeasePolicy::default()
    }
}

/// A SQLite and a PostgreSQL test for each `async fn name(&Fixture)`.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let fixture = super::Fixture::sqlite().await;
                super::$name(&fixture).await;
                fixture.done().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let fixture = super::Fixture::postgres().await;
                super::$name(&fixture).await;
                fixture.done().await;
            }
        }
    )*};
}

on_both_stores!(
    a_live_holder_joins_without_a_seat_even_when_the_license_is_full,
    a_full_license_refuses_and_says_when_a_seat_may_free,
    an_admin_release_holds_the_holder_off_for_the_cooldown,
    a_holder_whose_lease_lapsed_unswept_gets_a_new_one,
    a_full_license_reclaims_what_crashed_apps_left_behind,
    a_license_out_of_force_refuses_new_seats,
    a_refused_operation_in_a_batch_leaves_the_others_taken,
    a_machine_activates_once_and_a_full_license_refuses_the_next,
    a_heartbeat_ends_a_lapsed_lease_and_counts_an_unseen_instance,
);

async fn a_live_holder_joins_without_a_seat_even_when_the_license_is_full(f: &Fixture) {
    let license = f
        .license(
            SeatModel::Concurrent,
            1,
            LeasePolicy {
                max_instances_per_lease: 2,
                ..policy()
            },
        )
        .await;
    let (first, created) = f.take(&license, "m1", "i1").await;
    assert!(created);
    let (joined, created) = f.take(&license, "m1", "i2").await;
    assert!(!created, "a join counts no new seat");
    assert_eq!(joined.id, first.id);
    assert_eq!(joined.instance_set().as_slice(), ["i1", "i2"]);
    assert_eq!(f.seats_used(&license).await, 1);
    let refused = f.store.take_lease(&license, &holder("m1", "i3")).await;
    assert!(
        matches!(refused, Err(StoreError::InstanceLimit { limit: 2 })),
        "{refused:?}"
    );
    // The instance leaving does not free the seat; the last one does.
    assert!(!f
        .store
        .release_instance(&license, &first.id, "i1")
        .await
        .expect("a check-in"));
    assert!(f
        .store
        .release_instance(&license, &first.id, "i2")
        .await
        .expect("the last check-in"));
    assert_eq!(f.seats_used(&license).await, 0);
}

async fn a_full_license_refuses_and_says_when_a_seat_may_free(f: &Fixture) {
    let license = f.license(SeatModel::Concurrent, 2, policy()).await;
    let (first, _) = f.take(&license, "m1", "i").await;
    f.take(&license, "m2", "i").await;
    match f.store.take_lease(&license, &holder("m3", "i")).await {
        Err(StoreError::NoSeats {
            seats_total: 2,
            seats_used: 2,
            next_expiry_ms: Some(next),
            ..
        }) => {
            // The earliest a live lease could lapse: no later than the first one's expiry.
            let first_expiry = first.expires_at.expect("a lease expires");
            assert!(next > first.created_at && next <= first_expiry, "{next}");
        }
        other => panic!("a full license refuses: {other:?}"),
    }
    assert_eq!(f.seats_used(&license).await, 2);
}

async fn an_admin_release_holds_the_holder_off_for_the_cooldown(f: &Fixture) {
    let license = f
        .license(
            SeatModel::Concurrent,
            5,
            LeasePolicy {
                release_cooldown_s: 600,
                ..policy()
            },
        )
        .await;
    let (seat, _) = f.take(&license, "m1", "i").await;
    f.store
        .reclaim_seat(&Actor::system(), &f.workspace_id, &seat.id, false)
        .await
        .expect("an admin releases it");
    match f.store.take_lease(&license, &holder("m1", "i")).await {
        Err(StoreError::ReleaseCooldown { retry_after_s }) => {
            assert!((1..=600).contains(&retry_after_s), "{retry_after_s}")
        }
        other => panic!("the released holder waits: {other:?}"),
    }
    // Another holder is not held off.
    f.take(&license, "m2", "i").await;
    assert_eq!(f.seats_used(&license).await, 1);
}

async fn a_holder_whose_lease_lapsed_unswept_gets_a_new_one(f: &Fixture) {
    let license = f.license(SeatModel::Concurrent, 1, policy()).await;
    let now = chrono::Utc::now().timestamp_millis();
    // A lease of machine `seed-1`, OS user `u` (the first `import_leases` makes), that
    // lapsed a minute ago, not swept yet.
    f.store
        .import_leases(&license.id, 1, now - 120_000, now - 60_000)
        .await
        .expect("a lapsed lease");
    let lapsed_holder = LeaseHolder {
        fingerprint: "seed-1".into(),
        os_user: "u".into(),
        identifier: None,
        instance: "i".into(),
        queue: false,
    };
    let (seat, created) = f
        .store
        .take_lease(&license, &lapsed_holder)
        .await
        .expect("the holder takes a seat again");
    assert!(created, "a new lease, not the lapsed one rejoined");
    assert_ne!(seat.id, format!("{}-1", license.id));
    assert!(seat.expires_at.unwrap_or(0) > now);
    assert_eq!(f.seats_used(&license).await, 1);
}

async fn a_full_license_reclaims_what_crashed_apps_left_behind(f: &Fixture) {
    let license = f.license(SeatModel::Concurrent, 3, policy()).await;
    let now = chrono::Utc::now().timestamp_millis();
    f.store
        .import_leases(&license.id, 3, now - 120_000, now - 60_000)
        .await
        .expect("three lapsed leases");
    assert_eq!(f.seats_used(&license).await, 3);
    let (_, created) = f.take(&license, "m1", "i").await;
    assert!(created);
    // All three lapsed leases ended; one seat is held.
    assert_eq!(f.seats_used(&license).await, 1);
}

async fn a_license_out_of_force_refuses_new_seats(f: &Fixture) {
    let license = f.license(SeatModel::Concurrent, 3, policy()).await;
    let change = LicenseChange {
        licensed_to: license.licensed_to.clone(),
        vendor: None,
        license_type: license.license_type,
        status: LicenseStatus::Suspended,
        seat_model: SeatModel::Concurrent,
        seats_total: 3,
        version: None,
        cost: None,
        purchased_on: None,
        expires_on: None,
        maintenance_expires_on: None,
        po_number: None,
        notes: None,
        policy: policy(),
    };
    f.store
        .update_license(
            &Actor::system(),
            &f.workspace_id,
            &license.id,
            std::sync::Arc::new(move |_| Ok(change.clone())),
        )
        .await
        .expect("suspended");
    // The caller's copy still says active: the store decides on the license as it is.
    match f.store.take_lease(&license, &holder("m1", "i")).await {
        Err(StoreError::NotInForce(leasehold_core::EffectiveStatus::Suspended)) => {}
        other => panic!("a suspended license refuses: {other:?}"),
    }
    assert_eq!(f.seats_used(&license).await, 0);
}

async fn a_refused_operation_in_a_batch_leaves_the_others_taken(f: &Fixture) {
    let license = f
        .license(
            SeatModel::Concurrent,
            8,
            LeasePolicy {
                max_instances_per_lease: 1,
                ..policy()
            },
        )
        .await;
    f.take(&license, "m0", "i0").await;
    // Sixteen at once: a second instance on m0 (over its limit) and fifteen machines for
    // the seven seats left. The refusals must not undo the takes batched with them.
    let mut tasks = Vec::new();
    for n in 0..16 {
        let store = f.store.clone();
        let license = license.clone();
        let asked = if n == 0 {
            holder("m0", "i1")
        } else {
            holder(&format!("m{n}"), "i")
        };
        tasks.push(tokio::spawn(async move {
            store.take_lease(&license, &asked).await
        }));
    }
    let (mut taken, mut full, mut over_limit) = (0, 0, 0);
    for task in tasks {
        match task.await.expect("the task") {
            Ok((_, true)) => taken += 1,
            Err(StoreError::NoSeats { .. }) => full += 1,
            Err(StoreError::InstanceLimit { limit: 1 }) => over_limit += 1,
            other => panic!("an unexpected answer: {other:?}"),
        }
    }
    assert_eq!(over_limit, 1);
    assert_eq!(taken, 7, "every free seat was taken");
    assert_eq!(full, 8);
    assert_eq!(f.seats_used(&license).await, 8);
}

async fn a_machine_activates_once_and_a_full_license_refuses_the_next(f: &Fixture) {
    let license = f.license(SeatModel::Dedicated, 1, policy()).await;
    let (seat, created) = f
        .store
        .activate(&license, "m1", None)
        .await
        .expect("an activation");
    assert!(created);
    let (again, created) = f
        .store
        .activate(&license, "m1", Some("desk-1"))
        .await
        .expect("seen again");
    assert!(!created);
    assert_eq!(again.id, seat.id);
    match f.store.activate(&license, "m2", None).await {
        Err(StoreError::NoSeats { seats_total: 1, .. }) => {}
        other => panic!("a full license refuses: {other:?}"),
    }
    f.store
        .deactivate(&license, "m1")
        .await
        .expect("a self-service release");
    f.store
        .activate(&license, "m2", None)
        .await
        .expect("the freed seat");
    assert_eq!(f.seats_used(&license).await, 1);
}

async fn a_heartbeat_ends_a_lapsed_lease_and_counts_an_unseen_instance(f: &Fixture) {
    let license = f
        .license(
            SeatModel::Concurrent,
            2,
            LeasePolicy {
                max_instances_per_lease: 2,
                ..policy()
            },
        )
        .await;
    let now = chrono::Utc::now().timestamp_millis();
    f.store
        .import_leases(&license.id, 1, now - 120_000, now - 60_000)
        .await
        .expect("a lapsed lease");
    let lapsed = format!("{}-1", license.id);
    match f.store.heartbeat(&license, &lapsed, "i", None).await {
        Err(StoreError::LeaseEnded(leasehold_core::ReleaseReason::Expired)) => {}
        other => panic!("a lapsed lease's heartbeat is refused: {other:?}"),
    }
    assert_eq!(f.seats_used(&license).await, 0, "and its seat is freed");
    let (seat, _) = f.take(&license, "m1", "i1").await;
    let expires_at = f
        .store
        .heartbeat(&license, &seat.id, "i2", None)
        .await
        .expect("a live lease's heartbeat");
    assert!(expires_at >= seat.expires_at.unwrap_or(i64::MAX));
    let (joined, created) = f.take(&license, "m1", "i2").await;
    assert!(!created);
    assert_eq!(
        joined.instance_set().as_slice(),
        ["i1", "i2"],
        "i2 was counted in"
    );
    match f.store.heartbeat(&license, &seat.id, "i3", None).await {
        Err(StoreError::InstanceLimit { limit: 2 }) => {}
        other => panic!("a third instance is past the limit: {other:?}"),
    }
    match f
        .store
        .heartbeat(&license, "no-such-lease", "i1", None)
        .await
    {
        Err(StoreError::NotFound) => {}
        other => panic!("an unknown lease is not found: {other:?}"),
    }
}
