//! The closed vocabularies of the domain (DESIGN §1, §2). Each is stored and
//! sent as its snake_case name.

use serde::{Deserialize, Serialize};

macro_rules! vocabulary {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Parses the stored name; `None` for anything else.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        #[cfg(feature = "sqlx")]
        crate::text_column!($name);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

vocabulary!(
    /// How an application is deployed.
    DeploymentModel { Cloud => "cloud", OnPremise => "on_premise", Hybrid => "hybrid" }
);
vocabulary!(
    /// The commercial shape of a license.
    LicenseType { Perpetual => "perpetual", Subscription => "subscription", Trial => "trial" }
);
vocabulary!(
    /// The status an admin sets. Expiry is derived from `expires_on`, never stored here.
    LicenseStatus { Active => "active", Suspended => "suspended", Revoked => "revoked" }
);
vocabulary!(
    /// Whether seats are node-locked (dedicated) or floating (concurrent).
    SeatModel { Dedicated => "dedicated", Concurrent => "concurrent" }
);
vocabulary!(
    /// The three kinds of row in the seat ledger.
    SeatKind {
        Assignment => "assignment",
        Activation => "activation",
        Lease => "lease",
        Borrow => "borrow",
    }
);
vocabulary!(
    /// Why a seat ended.
    ReleaseReason {
        Checkin => "checkin",
        Expired => "expired",
        Reclaimed => "reclaimed",
        Transferred => "transferred",
        AdminRelease => "admin_release",
        LicenseRevoked => "license_revoked",
        LicenseDeleted => "license_deleted",
        Idle => "idle",
        BorrowEnded => "borrow_ended",
        Returned => "returned",
    }
);
vocabulary!(
    /// Whether a contact still works here.
    ContactStatus { Active => "active", Terminated => "terminated" }
);
vocabulary!(
    /// What a reminder is about.
    ReminderKind { Expiry => "expiry", MaintenanceExpiry => "maintenance_expiry" }
);
vocabulary!(
    /// Where a reminder is in its life.
    ReminderState { Pending => "pending", Sent => "sent", Dismissed => "dismissed" }
);
vocabulary!(
    /// Whether an admin may release a seat an application holds.
    AdminRelease { Allowed => "allowed", Denied => "denied" }
);
vocabulary!(
    /// Whether callers of a full floating license may wait for a seat in order (DESIGN §7).
    QueueMode { Fifo => "fifo", Off => "off" }
);
vocabulary!(
    /// The length of a usage bucket (DESIGN §8).
    BucketSize { Hour => "hour", Day => "day" }
);
vocabulary!(
    /// When an idle lease (DESIGN §7) loses its seat: only for someone who needs it, or
    /// as soon as it is idle.
    IdleReclaim { WhenNeeded => "when_needed", Always => "always" }
);

/// The lease policy of a license (DESIGN §1), with its defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeasePolicy {
    pub lease_ttl_s: i64,
    pub heartbeat_interval_s: i64,
    pub license_file_ttl_s: i64,
    pub self_service_releases_per_month: i64,
    pub admin_release: AdminRelease,
    pub release_cooldown_s: i64,
    /// The most instances (processes of one application) a lease counts (DESIGN §11).
    pub max_instances_per_lease: i64,
    /// Whether callers may queue for a seat of a full license (DESIGN §7).
    pub queue: QueueMode,
    /// How long a waiter keeps its place without asking again.
    pub queue_ttl_s: i64,
    /// How long a lease's every instance must be unused before it counts as idle
    /// (DESIGN §7); `None`: never.
    pub idle_timeout_s: Option<i64>,
    /// Whether an idle lease is released only for someone who needs its seat, or always.
    pub idle_reclaim: IdleReclaim,
    /// The most days a floating seat may be borrowed for offline use (0: borrowing is off).
    pub max_borrow_days: i64,
    /// The most seats out on borrow at once (`None`: any number up to `seats_total`).
    pub max_borrowed_seats: Option<i64>,
}

impl Default for LeasePolicy {
    fn default() -> Self {
        LeasePolicy {
            lease_ttl_s: 900,
            heartbeat_interval_s: 300,
            license_file_ttl_s: 7 * 24 * 3600,
            self_service_releases_per_month: 3,
            admin_release: AdminRelease::Allowed,
            release_cooldown_s: 900,
            max_instances_per_lease: 64,
            queue: QueueMode::Fifo,
            queue_ttl_s: 60,
            idle_timeout_s: None,
            idle_reclaim: IdleReclaim::WhenNeeded,
            max_borrow_days: 0,
            max_borrowed_seats: None,
        }
    }
}

impl LeasePolicy {
    /// Checks the policy's numbers; the error names the offending field.
    pub fn check(&self) -> Result<(), (&'static str, &'static str)> {
        const TEN_YEARS_S: i64 = 10 * 366 * 24 * 3600;
        for (field, value) in [
            ("policy.lease_ttl_s", self.lease_ttl_s),
            ("policy.heartbeat_interval_s", self.heartbeat_interval_s),
            ("policy.license_file_ttl_s", self.license_file_ttl_s),
            ("policy.release_cooldown_s", self.release_cooldown_s),
            ("policy.queue_ttl_s", self.queue_ttl_s),
            ("policy.idle_timeout_s", self.idle_timeout_s.unwrap_or(1)),
        ] {
            if value > TEN_YEARS_S {
                return Err((field, "must be at most ten years"));
            }
        }
        if self.self_service_releases_per_month > 10_000 {
            return Err((
                "policy.self_service_releases_per_month",
                "must be at most 10000",
            ));
        }
        if self.lease_ttl_s < 1 {
            return Err(("policy.lease_ttl_s", "must be at least 1 second"));
        }
        if self.heartbeat_interval_s < 1 {
            return Err(("policy.heartbeat_interval_s", "must be at least 1 second"));
        }
        if self.license_file_ttl_s < 1 {
            return Err(("policy.license_file_ttl_s", "must be at least 1 second"));
        }
        if self.self_service_releases_per_month < 0 {
            return Err((
                "policy.self_service_releases_per_month",
                "must not be negative",
            ));
        }
        if self.release_cooldown_s < 0 {
            return Err(("policy.release_cooldown_s", "must not be negative"));
        }
        if self.queue_ttl_s < 1 {
            return Err(("policy.queue_ttl_s", "must be at least 1 second"));
        }
        if !(0..=366).contains(&self.max_borrow_days) {
            return Err(("policy.max_borrow_days", "must be between 0 and 366"));
        }
        if self.max_borrowed_seats.is_some_and(|n| n < 0) {
            return Err(("policy.max_borrowed_seats", "must not be negative"));
        }
        if self.idle_timeout_s.is_some_and(|s| s < 1) {
            return Err((
                "policy.idle_timeout_s",
                "must be at least 1 second (null: never idle)",
            ));
        }
        if !(1..=10_000).contains(&self.max_instances_per_lease) {
            return Err((
                "policy.max_instances_per_lease",
                "must be between 1 and 10000",
            ));
        }
        Ok(())
    }
}

/// Money in integer minor units (cents for USD) with its ISO 4217 currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Money {
    pub amount_minor: i64,
    pub currency: String,
}

/// True for a three-letter upper-case code, the shape of ISO 4217.
pub fn is_currency_code(code: &str) -> bool {
    code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase())
}

/// What a license's state means to a client or a badge, today (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum EffectiveStatus {
    Active,
    Suspended,
    Revoked,
    Expired,
}

pub fn effective_status(
    status: LicenseStatus,
    expires_on: Option<chrono::NaiveDate>,
    today: chrono::NaiveDate,
) -> EffectiveStatus {
    match status {
        LicenseStatus::Revoked => EffectiveStatus::Revoked,
        LicenseStatus::Suspended => EffectiveStatus::Suspended,
        LicenseStatus::Active => match expires_on {
            Some(day) if day < today => EffectiveStatus::Expired,
            _ => EffectiveStatus::Active,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabulary_round_trips_through_its_names() {
        for kind in ReleaseReason::ALL {
            assert_eq!(ReleaseReason::parse(kind.as_str()), Some(*kind));
        }
        assert_eq!(LicenseType::parse("lifetime"), None);
    }

    #[test]
    fn a_license_past_its_expiry_is_expired_but_revocation_wins() {
        // fixed date: effective_status is given its own today
        let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        let yesterday = today.pred_opt();
        assert_eq!(
            effective_status(LicenseStatus::Active, yesterday, today),
            EffectiveStatus::Expired
        );
        assert_eq!(
            effective_status(LicenseStatus::Active, Some(today), today),
            EffectiveStatus::Active
        );
        assert_eq!(
            effective_status(LicenseStatus::Revoked, yesterday, today),
            EffectiveStatus::Revoked
        );
    }
}
