//! The seat ledger's rules, without I/O: how long a lease lives, when a holder an admin
//! released may come back, how many self-service releases a month allows, what a license
//! out of force answers, a lease's instance set, and **the seat decision**: given what an
//! engine read in its atomic step (the license's seats, the holder's live seat, its last
//! admin release) and now, what it must do next.
//!
//! Every store engine (SQLite's seat writer, the sqlx transactions) asks these functions
//! and applies their answer; a new rule (a queue, idle reclaim, borrowing) is added here
//! once. The engines still apply a take with a guarded statement (`seats_used <
//! seats_total`) and the table's check constraint, so a wrong read can refuse, never
//! over-count.

use crate::{EffectiveStatus, IdleReclaim, LeasePolicy, QueueMode, SeatModel};
use serde::{Deserialize, Serialize};

const MS_PER_S: i64 = 1000;

impl LeasePolicy {
    /// When a lease taken or renewed at `now` (ms) lapses without another heartbeat.
    pub fn lease_expiry(&self, now: i64) -> i64 {
        now.saturating_add(self.lease_ttl_s.saturating_mul(MS_PER_S))
    }

    /// The heartbeat interval a client is told: the policy's, but at least three beats
    /// per lease period (so one lost heartbeat never ends a lease), and at least 1 s.
    pub fn heartbeat_every_s(&self) -> i64 {
        self.heartbeat_interval_s.min(self.lease_ttl_s / 3).max(1)
    }

    /// Refuses a holder whose seat an admin released (at `last_admin_release`, ms) less
    /// than `release_cooldown_s` before `now`.
    pub fn release_cooldown(
        &self,
        last_admin_release: Option<i64>,
        now: i64,
    ) -> Result<(), Cooldown> {
        let Some(released_at) = last_admin_release else {
            return Ok(());
        };
        let until = released_at.saturating_add(self.release_cooldown_s.saturating_mul(MS_PER_S));
        if until > now {
            return Err(Cooldown {
                retry_after_s: (until - now + MS_PER_S - 1) / MS_PER_S,
            });
        }
        Ok(())
    }

    /// The cooldown as a window, for an engine that checks it in SQL: an admin release
    /// later than this (ms) still holds the holder off. `None` without a cooldown.
    pub fn cooldown_window_start(&self, now: i64) -> Option<i64> {
        self.has_release_cooldown()
            .then(|| now.saturating_sub(self.release_cooldown_s.saturating_mul(MS_PER_S)))
    }

    /// Waiters not seen since before this (ms) have lost their place in the queue.
    pub fn queue_cutoff(&self, now: i64) -> i64 {
        now.saturating_sub(self.queue_ttl_s.saturating_mul(MS_PER_S))
    }

    /// A lease idle since before this (ms) is idle now (DESIGN §7); `None` when the
    /// policy has no idle timeout.
    pub fn idle_cutoff(&self, now: i64) -> Option<i64> {
        self.idle_timeout_s
            .map(|timeout| now.saturating_sub(timeout.saturating_mul(MS_PER_S)))
    }

    /// Whether a lease idle since `idle_since` (ms; `None`: in use) is released at once,
    /// without anyone needing its seat: the policy reclaims `always`, and it is idle.
    pub fn releases_idle(&self, idle_since: Option<i64>, now: i64) -> bool {
        self.idle_reclaim == IdleReclaim::Always && self.is_idle(idle_since, now)
    }

    /// Whether a lease idle since `idle_since` counts as idle at `now`.
    pub fn is_idle(&self, idle_since: Option<i64>, now: i64) -> bool {
        matches!((idle_since, self.idle_cutoff(now)), (Some(since), Some(cutoff)) if since <= cutoff)
    }

    /// When a lease idle since `idle_since` becomes idle enough for the sweeper to release
    /// it (under `always`): the time its sweep is due. `None` when it never is.
    pub fn idle_release_at(&self, idle_since: Option<i64>) -> Option<i64> {
        match (self.idle_reclaim, self.idle_timeout_s, idle_since) {
            (IdleReclaim::Always, Some(timeout), Some(since)) => {
                Some(since.saturating_add(timeout.saturating_mul(MS_PER_S)))
            }
            _ => None,
        }
    }

    /// Whether the engine needs to read the holder's last admin release at all.
    pub fn has_release_cooldown(&self) -> bool {
        self.release_cooldown_s > 0
    }

    /// A machine's own release of its activation (self-service deactivation), given how
    /// many it made since [`month_start`]: refused past the policy's monthly allowance.
    pub fn self_service_release(&self, released_this_month: i64) -> Result<(), ReleaseLimit> {
        if released_this_month >= self.self_service_releases_per_month {
            return Err(ReleaseLimit {
                limit: self.self_service_releases_per_month,
            });
        }
        Ok(())
    }
}

/// A lease's expiry after a heartbeat or a renewal sent at `now` asks for `expires_at`,
/// given the lease's stored expiry and last-seen time: the newest heartbeat wins, so one
/// that arrives late (a stalled node, a retry) never moves the expiry back. A heartbeat
/// after a shorter lease period still shortens it, from its own time. (The stores' SQL
/// texts say the same in a `CASE`.)
pub fn renewed_expiry(
    stored_expires_at: i64,
    stored_last_seen: i64,
    expires_at: i64,
    now: i64,
) -> i64 {
    if expires_at < stored_expires_at && stored_last_seen > now {
        stored_expires_at
    } else {
        expires_at
    }
}

/// Refused: an admin released this holder's seat; it may take one again in `retry_after_s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cooldown {
    pub retry_after_s: i64,
}

/// Refused: the license's self-service releases for this month are used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReleaseLimit {
    pub limit: i64,
}

/// The start (ms, UTC) of the calendar month `today` is in: the self-service window.
pub fn month_start(today: chrono::NaiveDate) -> i64 {
    use chrono::Datelike;
    today
        .with_day(1)
        .unwrap_or(today)
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp_millis())
        .unwrap_or(0)
}

impl EffectiveStatus {
    /// What a client asking for a seat of a license in this state is told: `None` when
    /// the license is in force, else its error code and message.
    pub fn refusal(self) -> Option<(&'static str, &'static str)> {
        match self {
            EffectiveStatus::Active => None,
            EffectiveStatus::Suspended => Some(("SUSPENDED", "the license is suspended")),
            EffectiveStatus::Revoked => Some(("REVOKED", "the license is revoked")),
            EffectiveStatus::Expired => Some(("EXPIRED", "the license has expired")),
        }
    }
}

/// Refused: the lease already holds the policy's `max_instances_per_lease` instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceLimit {
    pub limit: i64,
}

/// The instances (processes of one application) a lease counts (DESIGN §3: the instances
/// on one machine and OS user share one seat), in the order they joined. Stored as a JSON
/// array; a stored value that does not parse reads as no instances.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Instances(Vec<String>);

impl Instances {
    /// A new lease's set: its first instance.
    pub fn first(instance: &str) -> Instances {
        Instances(vec![instance.to_string()])
    }

    /// The set from its stored JSON array.
    pub fn from_stored(stored: Option<&str>) -> Instances {
        stored
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or_default()
    }

    /// The stored JSON array.
    pub fn to_stored(&self) -> String {
        serde_json::to_string(&self.0).unwrap_or_else(|_| "[]".into())
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    pub fn contains(&self, instance: &str) -> bool {
        self.0.iter().any(|i| i == instance)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Counts `instance` in, up to `max` of them (DESIGN §11: the set is written whole
    /// on every change, so it may not grow without bound). `Ok(true)` when it was added,
    /// `Ok(false)` when it was there already.
    pub fn join(&mut self, instance: &str, max: i64) -> Result<bool, InstanceLimit> {
        if self.contains(instance) {
            return Ok(false);
        }
        if i64::try_from(self.0.len()).unwrap_or(i64::MAX) >= max {
            return Err(InstanceLimit { limit: max });
        }
        self.0.push(instance.to_string());
        Ok(true)
    }

    /// Counts `instance` out. Answers whether the lease has no instance left (and ends).
    pub fn leave(&mut self, instance: &str) -> bool {
        self.0.retain(|i| i != instance);
        self.0.is_empty()
    }
}

/// How far apart two reports of one idle start may be and still be the same start.
const IDLE_JITTER_MS: i64 = 2 * MS_PER_S;

/// What each instance of a lease last said of its user (DESIGN §7): since when (ms) it
/// has been unused, or `None` for in use. An instance that never said is in use. Stored
/// as a JSON object, only once an instance has reported idleness.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IdleReports(std::collections::BTreeMap<String, Option<i64>>);

impl IdleReports {
    /// The reports from their stored JSON object; a value that does not parse reads as
    /// none (every instance in use).
    pub fn from_stored(stored: Option<&str>) -> IdleReports {
        stored
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or_default()
    }

    /// The stored form: `None` while no instance of `instances` reports idleness (so a
    /// lease of apps that never report keeps no reports at all).
    pub fn to_stored(&self) -> Option<String> {
        self.0
            .values()
            .any(Option::is_some)
            .then(|| serde_json::to_string(&self.0).unwrap_or_else(|_| "{}".into()))
    }

    /// A heartbeat of `instance` at `now` that says its user was away for `idle_s`
    /// seconds (`None` or 0: in use); reports of instances no longer in the lease go.
    pub fn report(&mut self, instances: &Instances, instance: &str, idle_s: Option<i64>, now: i64) {
        let since = idle_s
            .filter(|idle| *idle > 0)
            .map(|idle| now.saturating_sub(idle.saturating_mul(MS_PER_S)));
        // The same absence said again (whole seconds, a little jitter) keeps its start,
        // so a steadily idle app's heartbeats change nothing to store.
        let same = |old: i64, new: i64| (old - new).abs() <= IDLE_JITTER_MS;
        let since = match (self.0.get(instance).copied().flatten(), since) {
            (Some(old), Some(new)) if same(old, new) => Some(old),
            (_, since) => since,
        };
        self.0.insert(instance.to_string(), since);
        self.0
            .retain(|name, _| instances.contains(name) || name == instance);
    }

    /// A heartbeat of `instance` saying `idle_s`, on a lease with these `stored` reports
    /// and `instances`: `None` on the hot path (nothing stored, and the instance in use or
    /// silent about it), else the lease's reports and idle time after it.
    pub fn beat(
        stored: Option<&str>,
        instances: &Instances,
        instance: &str,
        idle_s: Option<i64>,
        now: i64,
    ) -> Option<IdleBeat> {
        if stored.is_none() && idle_s.unwrap_or(0) <= 0 {
            return None;
        }
        let mut reports = IdleReports::from_stored(stored);
        reports.report(instances, instance, idle_s, now);
        let after = reports.to_stored();
        Some(IdleBeat {
            changed: after.as_deref() != stored,
            idle_since: reports.idle_since(instances),
            stored: after,
        })
    }

    /// Since when the whole lease has been unused: the latest of its instances' idle
    /// times, or `None` while any instance of `instances` is in use (or never said).
    pub fn idle_since(&self, instances: &Instances) -> Option<i64> {
        let mut latest: Option<i64> = None;
        for instance in instances.as_slice() {
            let since = self.0.get(instance).copied().flatten()?;
            latest = Some(latest.map_or(since, |l| l.max(since)));
        }
        latest
    }
}

/// A lease's idleness after a heartbeat ([`IdleReports::beat`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdleBeat {
    /// The reports to store (`None`: every instance in use).
    pub stored: Option<String>,
    /// Since when the whole lease has been unused.
    pub idle_since: Option<i64>,
    /// Whether `stored` differs from what was stored.
    pub changed: bool,
}

/// A license's seats as an engine read them inside its atomic step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LicenseSeats {
    pub model: SeatModel,
    pub standing: EffectiveStatus,
    pub seats_total: i64,
    pub seats_used: i64,
}

/// The holder's own live (unreleased) lease, if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLease {
    pub expires_at: i64,
    pub instances: Instances,
}

/// Everything the decision to give `instance` a floating seat depends on.
#[derive(Debug, Clone)]
pub struct TakeInput<'a> {
    pub instance: &'a str,
    pub now: i64,
    pub policy: LeasePolicy,
    pub license: LicenseSeats,
    /// The holder's unreleased lease.
    pub held: Option<HeldLease>,
    /// Whether the holder has a borrow out (DESIGN §7): that is its seat.
    pub borrowed: bool,
    /// When an admin last released this holder's seat (read only when the policy has a
    /// cooldown).
    pub last_admin_release: Option<i64>,
    /// Whether the license's lapsed leases were already ended in this step.
    pub lapsed_reclaimed: bool,
    /// Whether this step already looked for an idle lease to release (DESIGN §7).
    pub idle_reclaimed: bool,
    /// The license's wait queue as this holder sees it.
    pub waiting: Waiting,
    /// Whether the caller asked to wait in the queue when no seat is its (`queue: true`).
    pub queue: bool,
}

/// A license's wait queue as one holder's take sees it (DESIGN §7), read in the same
/// atomic step; only waiters that still hold their place count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Waiting {
    /// The waiters ahead of this holder: all of them, for a holder not in the queue.
    pub ahead: i64,
    /// Whether this holder holds a place.
    pub queued: bool,
}

/// Why a seat is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every seat is taken by a live lease.
    Full { seats_total: i64, seats_used: i64 },
    /// An admin released this holder's seat a moment ago.
    Cooldown(Cooldown),
    /// The license is suspended, revoked or expired.
    NotInForce(EffectiveStatus),
    /// The license's seats are of the other model (changed since the caller read it).
    OtherModel(SeatModel),
    /// The holder's lease counts its most instances already.
    InstanceLimit(InstanceLimit),
}

impl Refusal {
    /// Whether the workspace's webhooks hear of it (`seat.denied`): every refusal of a
    /// seat, not a refused extra instance of a seat the holder has.
    pub fn is_announced(&self) -> bool {
        !matches!(self, Refusal::InstanceLimit(_))
    }
}

/// What the engine does next to give a holder a floating seat. The steps that change the
/// input (`EndOwnLapsed`, `ReclaimLapsed`) are followed by another decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TakeStep {
    /// The holder borrowed a seat: its app runs on the borrow, and no seat is counted.
    OnBorrow,
    /// The holder's live lease counts this instance too (`added`: it was not there) and
    /// lives on to `expires_at`. No seat is counted.
    Join {
        instances: Instances,
        expires_at: i64,
        added: bool,
    },
    /// The holder's lease lapsed without being swept: end it (reason `expired`, its seat
    /// freed), then decide again without it.
    EndOwnLapsed,
    /// The license is full: end its lapsed leases first (what crashed apps left behind),
    /// then decide again with `lapsed_reclaimed` and the seats they freed.
    ReclaimLapsed,
    /// The license is full and this holder is next: release its longest-idle lease (one
    /// idle since at most `idle_before`, ms; reason `idle`), then decide again with
    /// `idle_reclaimed` and the seat it freed, if any.
    ReclaimIdle {
        idle_before: i64,
    },
    /// Count one more seat and write a new lease to `expires_at` (and give up the
    /// holder's place in the queue, if it held one).
    Take {
        expires_at: i64,
    },
    /// No seat is the holder's yet: hold its place in the queue (a new place at the end,
    /// or the one it has, seen again) and answer `NO_SEATS` with its position.
    Wait,
    Refuse(Refusal),
}

/// The seat decision for a floating seat (DESIGN §2–§3).
pub fn decide_take(input: &TakeInput<'_>) -> TakeStep {
    if input.borrowed {
        return TakeStep::OnBorrow;
    }
    let expires_at = input.policy.lease_expiry(input.now);
    if let Some(held) = &input.held {
        if held.expires_at < input.now {
            return TakeStep::EndOwnLapsed;
        }
        let mut instances = held.instances.clone();
        return match instances.join(input.instance, input.policy.max_instances_per_lease) {
            Ok(added) => TakeStep::Join {
                instances,
                expires_at,
                added,
            },
            Err(limit) => TakeStep::Refuse(Refusal::InstanceLimit(limit)),
        };
    }
    let license = &input.license;
    match admit(
        &input.policy,
        license,
        SeatModel::Concurrent,
        input.last_admin_release,
        input.now,
    ) {
        Err(Refusal::Full { .. }) if !input.lapsed_reclaimed => TakeStep::ReclaimLapsed,
        Err(refusal @ Refusal::Full { .. }) => match idle_to_reclaim(input) {
            Some(idle_before) => TakeStep::ReclaimIdle { idle_before },
            None => wait_or_refuse(input, refusal),
        },
        Err(refusal) => TakeStep::Refuse(refusal),
        // A free seat is the first waiters' (DESIGN §7): the holder gets one only when
        // more seats are free than waiters are ahead of it.
        Ok(()) if license.seats_total - license.seats_used > input.waiting.ahead => {
            TakeStep::Take { expires_at }
        }
        Ok(()) if !input.lapsed_reclaimed => TakeStep::ReclaimLapsed,
        Ok(()) => wait_or_refuse(
            input,
            Refusal::Full {
                seats_total: license.seats_total,
                seats_used: license.seats_used,
            },
        ),
    }
}

/// On a full license, whether this holder may have an idle lease's seat: the policy has an
/// idle timeout, nobody waits ahead of the holder (a waiter ahead is served first, by its
/// own take), and no idle lease was looked for yet in this step. Answers the idle cutoff.
fn idle_to_reclaim(input: &TakeInput<'_>) -> Option<i64> {
    if input.idle_reclaimed || input.waiting.ahead > 0 {
        return None;
    }
    input.policy.idle_cutoff(input.now)
}

/// A holder who gets no seat waits in the queue if it asked to and the policy queues.
fn wait_or_refuse(input: &TakeInput<'_>, refusal: Refusal) -> TakeStep {
    if input.queue && input.policy.queue == QueueMode::Fifo {
        TakeStep::Wait
    } else {
        TakeStep::Refuse(refusal)
    }
}

/// The holder's own live seat of a floating license, as a borrow sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldFloating {
    None,
    /// A live lease (heartbeats): borrowing turns it into a borrow.
    Lease,
    /// A borrow, still out: borrowing again renews it.
    Borrow,
}

/// Everything the decision to lend a holder a floating seat for offline use depends on
/// (DESIGN §7).
#[derive(Debug, Clone)]
pub struct BorrowInput {
    pub now: i64,
    pub days: i64,
    pub policy: LeasePolicy,
    pub license: LicenseSeats,
    pub held: HeldFloating,
    /// The license's borrows still out.
    pub borrowed: i64,
    /// The license's waiters (a borrow is a newcomer: it takes a seat only when more
    /// seats are free than waiters wait).
    pub waiters: i64,
    pub last_admin_release: Option<i64>,
    pub lapsed_reclaimed: bool,
}

/// Why a borrow is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BorrowRefusal {
    /// The policy's `max_borrow_days` is 0.
    NotAllowed,
    /// `days` is not between 1 and the policy's `max_borrow_days`.
    Days { max: i64 },
    /// The policy's `max_borrowed_seats` are out already.
    Limit { limit: i64 },
    /// No seat for it (full, cooldown, not in force, other model).
    Seat(Refusal),
}

/// What the engine does to lend a holder a floating seat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BorrowStep {
    /// The holder's borrow is renewed, to `until` (ms): counted from now.
    Renew {
        until: i64,
    },
    /// The holder's live lease becomes a borrow to `until`: its seat, no new one.
    Convert {
        until: i64,
    },
    /// The license is full: end its lapsed leases, then decide again.
    ReclaimLapsed,
    /// Count one more seat and write a borrow to `until`.
    Take {
        until: i64,
    },
    Refuse(BorrowRefusal),
}

const MS_PER_DAY: i64 = 24 * 3600 * MS_PER_S;

/// Why an admin may not end a seat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminRefusal {
    /// The license's policy keeps admins off the seats applications hold.
    PolicyDenies,
    /// A borrow's offline file stays valid to its end: ended only with `force`.
    Borrowed,
}

impl AdminRefusal {
    pub fn message(self) -> &'static str {
        match self {
            AdminRefusal::PolicyDenies => {
                "this license's policy does not let admins release seats that applications hold"
            }
            AdminRefusal::Borrowed => {
                "this seat is borrowed for offline use and its license file stays valid until the \
                 borrow ends: reclaim it with force=true to free the seat anyway"
            }
        }
    }
}

/// An admin ends a seat of `kind` (`force`: even a borrow): an assignment is reclaimed;
/// a seat an application holds is released as the policy's `admin_release` allows.
pub fn admin_release(
    kind: crate::SeatKind,
    policy: crate::AdminRelease,
    force: bool,
) -> Result<crate::ReleaseReason, AdminRefusal> {
    use crate::{AdminRelease, ReleaseReason, SeatKind};
    match kind {
        SeatKind::Assignment => Ok(ReleaseReason::Reclaimed),
        SeatKind::Borrow if !force => Err(AdminRefusal::Borrowed),
        _ if policy == AdminRelease::Allowed => Ok(ReleaseReason::AdminRelease),
        _ => Err(AdminRefusal::PolicyDenies),
    }
}

/// The decision to lend a floating seat for offline use (DESIGN §7).
pub fn decide_borrow(input: &BorrowInput) -> BorrowStep {
    let policy = &input.policy;
    if policy.max_borrow_days <= 0 {
        return BorrowStep::Refuse(BorrowRefusal::NotAllowed);
    }
    if !(1..=policy.max_borrow_days).contains(&input.days) {
        return BorrowStep::Refuse(BorrowRefusal::Days {
            max: policy.max_borrow_days,
        });
    }
    let until = input
        .now
        .saturating_add(input.days.saturating_mul(MS_PER_DAY));
    if input.held == HeldFloating::Borrow {
        return BorrowStep::Renew { until };
    }
    if let Some(limit) = policy.max_borrowed_seats {
        if input.borrowed >= limit {
            return BorrowStep::Refuse(BorrowRefusal::Limit { limit });
        }
    }
    if input.held == HeldFloating::Lease {
        return BorrowStep::Convert { until };
    }
    let license = &input.license;
    match admit(
        policy,
        license,
        SeatModel::Concurrent,
        input.last_admin_release,
        input.now,
    ) {
        Ok(()) if license.seats_total - license.seats_used > input.waiters => {
            BorrowStep::Take { until }
        }
        Ok(()) | Err(Refusal::Full { .. }) if !input.lapsed_reclaimed => BorrowStep::ReclaimLapsed,
        Ok(()) => BorrowStep::Refuse(BorrowRefusal::Seat(Refusal::Full {
            seats_total: license.seats_total,
            seats_used: license.seats_used,
        })),
        Err(refusal) => BorrowStep::Refuse(BorrowRefusal::Seat(refusal)),
    }
}

/// What the engine does to give a machine a dedicated seat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActivateStep {
    /// The machine holds its activation already: it is seen again.
    Renew,
    /// Count one more seat and write the activation.
    Activate,
    Refuse(Refusal),
}

/// The seat decision for a dedicated seat: `held` is whether the machine holds one.
pub fn decide_activate(
    policy: &LeasePolicy,
    license: &LicenseSeats,
    held: bool,
    last_admin_release: Option<i64>,
    now: i64,
) -> ActivateStep {
    if held {
        return ActivateStep::Renew;
    }
    match admit(
        policy,
        license,
        SeatModel::Dedicated,
        last_admin_release,
        now,
    ) {
        Ok(()) => ActivateStep::Activate,
        Err(refusal) => ActivateStep::Refuse(refusal),
    }
}

/// Whether a holder without a seat gets a new one, in the order refusals are explained:
/// an admin's recent release, the seat model, the license's standing, then room.
fn admit(
    policy: &LeasePolicy,
    license: &LicenseSeats,
    model: SeatModel,
    last_admin_release: Option<i64>,
    now: i64,
) -> Result<(), Refusal> {
    policy
        .release_cooldown(last_admin_release, now)
        .map_err(Refusal::Cooldown)?;
    if license.model != model {
        return Err(Refusal::OtherModel(license.model));
    }
    if license.standing != EffectiveStatus::Active {
        return Err(Refusal::NotInForce(license.standing));
    }
    if license.seats_used >= license.seats_total {
        return Err(Refusal::Full {
            seats_total: license.seats_total,
            seats_used: license.seats_used,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000_000;

    fn seats(used: i64, total: i64) -> LicenseSeats {
        LicenseSeats {
            model: SeatModel::Concurrent,
            standing: EffectiveStatus::Active,
            seats_total: total,
            seats_used: used,
        }
    }

    fn input(license: LicenseSeats) -> TakeInput<'static> {
        TakeInput {
            instance: "i1",
            now: NOW,
            policy: LeasePolicy::default(),
            license,
            held: None,
            borrowed: false,
            last_admin_release: None,
            lapsed_reclaimed: false,
            idle_reclaimed: false,
            waiting: Waiting::default(),
            queue: false,
        }
    }

    #[test]
    fn a_full_license_takes_an_idle_seat_only_for_the_next_in_line() {
        let mut take = input(seats(2, 2));
        take.lapsed_reclaimed = true;
        // No idle timeout: refused.
        assert!(matches!(
            decide_take(&take),
            TakeStep::Refuse(Refusal::Full { .. })
        ));
        take.policy.idle_timeout_s = Some(600);
        assert_eq!(
            decide_take(&take),
            TakeStep::ReclaimIdle {
                idle_before: NOW - 600_000
            }
        );
        // Nothing idle was found (the seats stay full): refused, or queued.
        take.idle_reclaimed = true;
        assert!(matches!(
            decide_take(&take),
            TakeStep::Refuse(Refusal::Full { .. })
        ));
        // One was released: its seat is this holder's.
        take.license.seats_used = 1;
        assert!(matches!(decide_take(&take), TakeStep::Take { .. }));
        // A waiter ahead is served first, by its own take.
        let mut behind = input(seats(2, 2));
        behind.lapsed_reclaimed = true;
        behind.policy.idle_timeout_s = Some(600);
        behind.queue = true;
        behind.waiting = Waiting {
            ahead: 1,
            queued: true,
        };
        assert_eq!(decide_take(&behind), TakeStep::Wait);
        behind.waiting.ahead = 0;
        assert!(matches!(decide_take(&behind), TakeStep::ReclaimIdle { .. }));
    }

    #[test]
    fn a_borrow_is_lent_within_the_policy_and_renewed_or_converted() {
        let mut borrow = BorrowInput {
            now: NOW,
            days: 3,
            policy: LeasePolicy::default(),
            license: seats(1, 2),
            held: HeldFloating::None,
            borrowed: 0,
            waiters: 0,
            last_admin_release: None,
            lapsed_reclaimed: false,
        };
        assert_eq!(
            decide_borrow(&borrow),
            BorrowStep::Refuse(BorrowRefusal::NotAllowed)
        );
        borrow.policy.max_borrow_days = 2;
        assert_eq!(
            decide_borrow(&borrow),
            BorrowStep::Refuse(BorrowRefusal::Days { max: 2 })
        );
        borrow.days = 2;
        let until = NOW + 2 * 86_400_000;
        assert_eq!(decide_borrow(&borrow), BorrowStep::Take { until });
        borrow.held = HeldFloating::Lease;
        assert_eq!(decide_borrow(&borrow), BorrowStep::Convert { until });
        borrow.policy.max_borrowed_seats = Some(1);
        borrow.borrowed = 1;
        assert_eq!(
            decide_borrow(&borrow),
            BorrowStep::Refuse(BorrowRefusal::Limit { limit: 1 })
        );
        borrow.held = HeldFloating::Borrow;
        assert_eq!(decide_borrow(&borrow), BorrowStep::Renew { until });
        // A newcomer's borrow waits its turn behind waiters, and sweeps before refusing.
        borrow.held = HeldFloating::None;
        borrow.borrowed = 0;
        borrow.waiters = 1;
        assert_eq!(decide_borrow(&borrow), BorrowStep::ReclaimLapsed);
        borrow.lapsed_reclaimed = true;
        assert!(matches!(
            decide_borrow(&borrow),
            BorrowStep::Refuse(BorrowRefusal::Seat(Refusal::Full { .. }))
        ));
    }

    #[test]
    fn a_holder_with_a_borrow_runs_on_it_even_on_a_full_license() {
        let mut take = input(seats(2, 2));
        take.borrowed = true;
        assert_eq!(decide_take(&take), TakeStep::OnBorrow);
    }

    #[test]
    fn a_lease_is_idle_when_every_instance_is() {
        let mut instances = Instances::first("a");
        instances.join("b", 5).ok();
        let mut reports = IdleReports::default();
        assert_eq!(reports.idle_since(&instances), None, "never said: in use");
        reports.report(&instances, "a", Some(600), NOW);
        assert_eq!(reports.idle_since(&instances), None, "b never said");
        reports.report(&instances, "b", Some(60), NOW);
        assert_eq!(
            reports.idle_since(&instances),
            Some(NOW - 60_000),
            "the latest use"
        );
        reports.report(&instances, "b", None, NOW);
        assert_eq!(reports.idle_since(&instances), None, "b is in use again");
        assert!(reports.to_stored().is_some());
        reports.report(&instances, "a", Some(0), NOW);
        assert_eq!(reports.to_stored(), None, "all in use: nothing stored");
        // Round trip, and a report of an instance that left goes.
        reports.report(&instances, "a", Some(5), NOW);
        let stored = reports.to_stored();
        assert_eq!(IdleReports::from_stored(stored.as_deref()), reports);
        instances.leave("b");
        reports.report(&instances, "a", Some(5), NOW);
        assert_eq!(reports.idle_since(&instances), Some(NOW - 5_000));
        assert_eq!(
            IdleReports::from_stored(Some("[1]")),
            IdleReports::default()
        );
    }

    #[test]
    fn a_heartbeat_costs_nothing_while_nobody_reports_idleness() {
        let instances = Instances::first("a");
        assert_eq!(IdleReports::beat(None, &instances, "a", None, NOW), None);
        assert_eq!(IdleReports::beat(None, &instances, "a", Some(0), NOW), None);
        let idle = IdleReports::beat(None, &instances, "a", Some(30), NOW).expect("idle");
        assert!(idle.changed);
        assert_eq!(idle.idle_since, Some(NOW - 30_000));
        // The same idle start said again changes nothing; use again clears it.
        let again = IdleReports::beat(
            idle.stored.as_deref(),
            &instances,
            "a",
            Some(31),
            NOW + 1000,
        )
        .expect("reports stored");
        assert!(!again.changed);
        // A little off (whole seconds, a late beat) is still the same start.
        let jitter = IdleReports::beat(
            idle.stored.as_deref(),
            &instances,
            "a",
            Some(31),
            NOW + 2_900,
        )
        .expect("reports stored");
        assert!(!jitter.changed, "{jitter:?}");
        let back = IdleReports::beat(idle.stored.as_deref(), &instances, "a", None, NOW)
            .expect("reports stored");
        assert_eq!(
            (back.stored, back.idle_since, back.changed),
            (None, None, true)
        );
    }

    #[test]
    fn always_releases_an_idle_lease_at_its_timeout() {
        let mut policy = LeasePolicy {
            idle_timeout_s: Some(60),
            ..LeasePolicy::default()
        };
        assert!(policy.is_idle(Some(NOW - 60_000), NOW));
        assert!(!policy.is_idle(Some(NOW - 59_999), NOW));
        assert!(!policy.is_idle(None, NOW));
        assert!(
            !policy.releases_idle(Some(NOW - 60_000), NOW),
            "when needed only"
        );
        assert_eq!(policy.idle_release_at(Some(NOW)), None);
        policy.idle_reclaim = IdleReclaim::Always;
        assert!(policy.releases_idle(Some(NOW - 60_000), NOW));
        assert_eq!(policy.idle_release_at(Some(NOW)), Some(NOW + 60_000));
        policy.idle_timeout_s = None;
        assert!(!policy.releases_idle(Some(0), NOW));
    }

    #[test]
    fn a_free_seat_goes_to_the_waiters_ahead_first() {
        // Two seats free, two waiters: a newcomer waits behind them, or is refused.
        let mut newcomer = input(seats(3, 5));
        newcomer.lapsed_reclaimed = true;
        newcomer.waiting = Waiting {
            ahead: 2,
            queued: false,
        };
        assert!(matches!(
            decide_take(&newcomer),
            TakeStep::Refuse(Refusal::Full { .. })
        ));
        newcomer.queue = true;
        assert_eq!(decide_take(&newcomer), TakeStep::Wait);
        // With three free, the third is the newcomer's.
        newcomer.license = seats(2, 5);
        assert!(matches!(decide_take(&newcomer), TakeStep::Take { .. }));
        // The second in the queue takes the second free seat, not a first.
        let mut second = input(seats(3, 5));
        second.lapsed_reclaimed = true;
        second.waiting = Waiting {
            ahead: 1,
            queued: true,
        };
        assert!(matches!(decide_take(&second), TakeStep::Take { .. }));
        second.license = seats(4, 5);
        second.queue = true;
        assert_eq!(decide_take(&second), TakeStep::Wait);
    }

    #[test]
    fn a_full_license_reclaims_lapsed_leases_before_anyone_waits() {
        let mut waiter = input(seats(2, 2));
        waiter.queue = true;
        assert_eq!(decide_take(&waiter), TakeStep::ReclaimLapsed);
        waiter.lapsed_reclaimed = true;
        assert_eq!(decide_take(&waiter), TakeStep::Wait);
        waiter.policy.queue = QueueMode::Off;
        assert!(matches!(
            decide_take(&waiter),
            TakeStep::Refuse(Refusal::Full { .. })
        ));
    }

    #[test]
    fn instances_join_once_and_up_to_the_limit() {
        let mut instances = Instances::first("a");
        assert_eq!(instances.join("a", 2), Ok(false));
        assert_eq!(instances.join("b", 2), Ok(true));
        assert_eq!(instances.join("c", 2), Err(InstanceLimit { limit: 2 }));
        assert_eq!(instances.join("b", 2), Ok(false), "a member may come again");
        assert_eq!(instances.as_slice(), ["a", "b"]);
        assert!(!instances.leave("a"));
        assert!(instances.leave("b"), "the last one leaving ends the lease");
    }

    #[test]
    fn instances_round_trip_through_their_stored_form() {
        let mut instances = Instances::first("a");
        instances.join("b\"quoted", 5).ok();
        let stored = instances.to_stored();
        assert_eq!(stored, r#"["a","b\"quoted"]"#);
        assert_eq!(Instances::from_stored(Some(&stored)), instances);
        assert!(Instances::from_stored(None).is_empty());
        assert!(Instances::from_stored(Some("not json")).is_empty());
    }

    #[test]
    fn a_lease_lives_its_period_and_is_beaten_at_least_three_times() {
        let policy = LeasePolicy {
            lease_ttl_s: 60,
            heartbeat_interval_s: 300,
            ..LeasePolicy::default()
        };
        assert_eq!(policy.lease_expiry(NOW), NOW + 60_000);
        assert_eq!(policy.heartbeat_every_s(), 20);
        let short = LeasePolicy {
            lease_ttl_s: 1,
            ..policy
        };
        assert_eq!(short.heartbeat_every_s(), 1);
        let relaxed = LeasePolicy {
            lease_ttl_s: 900,
            heartbeat_interval_s: 120,
            ..policy
        };
        assert_eq!(relaxed.heartbeat_every_s(), 120);
        let huge = LeasePolicy {
            lease_ttl_s: i64::MAX,
            ..policy
        };
        assert_eq!(huge.lease_expiry(NOW), i64::MAX);
    }

    #[test]
    fn the_newest_heartbeat_wins() {
        // In order: the later heartbeat sets the expiry.
        assert_eq!(renewed_expiry(NOW + 10, NOW - 5, NOW + 20, NOW), NOW + 20);
        // Late: one sent before the last recorded can't move the expiry back...
        assert_eq!(renewed_expiry(NOW + 30, NOW + 5, NOW + 20, NOW), NOW + 30);
        // ... but may still push it on.
        assert_eq!(renewed_expiry(NOW + 30, NOW + 5, NOW + 40, NOW), NOW + 40);
        // A shorter period applies from a heartbeat in order.
        assert_eq!(renewed_expiry(NOW + 30, NOW - 5, NOW + 20, NOW), NOW + 20);
    }

    #[test]
    fn the_cooldown_counts_whole_seconds_up_from_the_admin_release() {
        let policy = LeasePolicy {
            release_cooldown_s: 60,
            ..LeasePolicy::default()
        };
        assert_eq!(policy.release_cooldown(None, NOW), Ok(()));
        assert_eq!(
            policy.release_cooldown(Some(NOW - 500), NOW),
            Err(Cooldown { retry_after_s: 60 })
        );
        assert_eq!(
            policy.release_cooldown(Some(NOW - 59_001), NOW),
            Err(Cooldown { retry_after_s: 1 })
        );
        assert_eq!(policy.release_cooldown(Some(NOW - 60_000), NOW), Ok(()));
        // The window an engine checks in SQL agrees at its edge.
        let start = policy.cooldown_window_start(NOW);
        assert_eq!(start, Some(NOW - 60_000));
        assert!(policy.release_cooldown(start.map(|s| s + 1), NOW).is_err());
        assert!(policy.release_cooldown(start, NOW).is_ok());
        let none = LeasePolicy {
            release_cooldown_s: 0,
            ..policy
        };
        assert!(!none.has_release_cooldown());
        assert_eq!(none.cooldown_window_start(NOW), None);
        assert_eq!(none.release_cooldown(Some(NOW), NOW), Ok(()));
    }

    #[test]
    fn self_service_releases_are_counted_per_calendar_month() {
        let policy = LeasePolicy {
            self_service_releases_per_month: 2,
            ..LeasePolicy::default()
        };
        assert_eq!(policy.self_service_release(1), Ok(()));
        assert_eq!(
            policy.self_service_release(2),
            Err(ReleaseLimit { limit: 2 })
        );
        let today = chrono::Utc::now().date_naive();
        let start = month_start(today);
        let first = chrono::DateTime::from_timestamp_millis(start)
            .map(|t| t.naive_utc())
            .unwrap_or_default();
        use chrono::{Datelike, Timelike};
        assert_eq!((first.year(), first.month()), (today.year(), today.month()));
        assert_eq!((first.day(), first.hour(), first.minute()), (1, 0, 0));
    }

    #[test]
    fn each_standing_out_of_force_has_its_code() {
        assert_eq!(EffectiveStatus::Active.refusal(), None);
        assert_eq!(
            EffectiveStatus::Suspended.refusal().map(|r| r.0),
            Some("SUSPENDED")
        );
        assert_eq!(
            EffectiveStatus::Revoked.refusal().map(|r| r.0),
            Some("REVOKED")
        );
        assert_eq!(
            EffectiveStatus::Expired.refusal().map(|r| r.0),
            Some("EXPIRED")
        );
    }

    #[test]
    fn a_free_seat_is_taken_to_the_lease_period() {
        assert_eq!(
            decide_take(&input(seats(1, 2))),
            TakeStep::Take {
                expires_at: NOW + 900_000
            }
        );
    }

    #[test]
    fn a_live_holder_joins_even_on_a_full_license() {
        let mut take = input(seats(2, 2));
        take.held = Some(HeldLease {
            expires_at: NOW,
            instances: Instances::first("i0"),
        });
        let TakeStep::Join {
            instances, added, ..
        } = decide_take(&take)
        else {
            panic!("a live holder joins");
        };
        assert!(added);
        assert_eq!(instances.as_slice(), ["i0", "i1"]);
        take.policy.max_instances_per_lease = 1;
        assert_eq!(
            decide_take(&take),
            TakeStep::Refuse(Refusal::InstanceLimit(InstanceLimit { limit: 1 }))
        );
    }

    #[test]
    fn a_holder_whose_lease_lapsed_ends_it_before_taking_again() {
        let mut take = input(seats(2, 2));
        take.held = Some(HeldLease {
            expires_at: NOW - 1,
            instances: Instances::first("i1"),
        });
        assert_eq!(decide_take(&take), TakeStep::EndOwnLapsed);
        // The engine ended it: its seat is free again.
        take.held = None;
        take.license.seats_used = 1;
        assert!(matches!(decide_take(&take), TakeStep::Take { .. }));
    }

    #[test]
    fn a_full_license_reclaims_lapsed_leases_once_before_refusing() {
        let mut take = input(seats(2, 2));
        assert_eq!(decide_take(&take), TakeStep::ReclaimLapsed);
        take.lapsed_reclaimed = true;
        assert_eq!(
            decide_take(&take),
            TakeStep::Refuse(Refusal::Full {
                seats_total: 2,
                seats_used: 2
            })
        );
        take.license.seats_used = 1;
        assert!(matches!(decide_take(&take), TakeStep::Take { .. }));
    }

    #[test]
    fn refusals_come_in_order_cooldown_model_standing_room() {
        let mut take = input(LicenseSeats {
            model: SeatModel::Dedicated,
            standing: EffectiveStatus::Suspended,
            seats_total: 1,
            seats_used: 1,
        });
        take.last_admin_release = Some(NOW - 1000);
        assert!(matches!(
            decide_take(&take),
            TakeStep::Refuse(Refusal::Cooldown(_))
        ));
        take.last_admin_release = None;
        assert_eq!(
            decide_take(&take),
            TakeStep::Refuse(Refusal::OtherModel(SeatModel::Dedicated))
        );
        take.license.model = SeatModel::Concurrent;
        assert_eq!(
            decide_take(&take),
            TakeStep::Refuse(Refusal::NotInForce(EffectiveStatus::Suspended))
        );
        assert!(Refusal::NotInForce(EffectiveStatus::Suspended).is_announced());
        assert!(!Refusal::InstanceLimit(InstanceLimit { limit: 1 }).is_announced());
    }

    #[test]
    fn a_machine_activates_once_and_is_refused_on_a_full_license() {
        let policy = LeasePolicy::default();
        let dedicated = LicenseSeats {
            model: SeatModel::Dedicated,
            ..seats(1, 1)
        };
        assert_eq!(
            decide_activate(&policy, &dedicated, true, None, NOW),
            ActivateStep::Renew
        );
        assert_eq!(
            decide_activate(&policy, &dedicated, false, None, NOW),
            ActivateStep::Refuse(Refusal::Full {
                seats_total: 1,
                seats_used: 1
            })
        );
        let room = LicenseSeats {
            seats_total: 2,
            ..dedicated
        };
        assert_eq!(
            decide_activate(&policy, &room, false, None, NOW),
            ActivateStep::Activate
        );
        assert!(matches!(
            decide_activate(&policy, &room, false, Some(NOW), NOW),
            ActivateStep::Refuse(Refusal::Cooldown(_))
        ));
    }
}
