//! Usage analytics (DESIGN §8) on both stores. What seats were held comes from the seat
//! ledger itself (every seat's taken and released times), so counting costs a seat
//! operation nothing and a back-fill is the same computation as live counting: closed
//! hours and days are rolled up into `usage_buckets` by a background job, and what is not
//! rolled up yet (the hour in progress, or a license not reached yet) is computed from the
//! ledger when asked. Refusals are counted as they happen (`usage_denials`, by the seat
//! engines), with the queue's peak (`usage_queue`).

use super::*;
use leasehold_core::usage::{self, figures, Figures, Held, DAY_MS, HOUR_MS};
use std::collections::HashMap;

/// Buckets and refusal counts are kept 13 months.
const KEEP_MS: i64 = 395 * DAY_MS;
/// How long after its end an hour counts as closed.
const SETTLE_MS: i64 = 5_000;
/// The most closed time one rollup call handles per license.
const ROLLUP_CHUNK_MS: i64 = 31 * DAY_MS;

/// The seats of license `$1` held at some time in `[$2, $3)`: released after its start,
/// or still held; both taken before its end. Both halves are range scans of the index of
/// released seats `(license_id, release_reason, released_at)`: one per release reason
/// (named, so that the index serves `released_at > $2` under each), and the held seats'
/// `NULL` reason.
fn held_between_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        let reasons: Vec<String> = ReleaseReason::ALL
            .iter()
            .map(|reason| format!("'{}'", reason.as_str()))
            .collect();
        format!(
            "SELECT fingerprint, os_user, contact_id, assignee_name, device_name, id, \
             created_at, released_at FROM seats WHERE license_id = $1 \
             AND release_reason IN ({}) AND released_at > $2 AND created_at < $3 \
             UNION ALL SELECT fingerprint, os_user, contact_id, assignee_name, device_name, id, \
             created_at, released_at FROM seats WHERE license_id = $1 AND release_reason IS NULL \
             AND released_at IS NULL AND created_at < $3",
            reasons.join(", ")
        )
    })
}

type SeatRow = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    i64,
    Option<i64>,
);

fn bucket_len(size: BucketSize) -> i64 {
    match size {
        BucketSize::Hour => HOUR_MS,
        BucketSize::Day => DAY_MS,
    }
}

/// The bucket starts of `[from, end)`, `from` aligned to `len`.
fn starts(from: i64, end: i64, len: i64) -> impl Iterator<Item = i64> {
    (0..)
        .map(move |n| from + n * len)
        .take_while(move |b| *b < end)
}

impl This {
    /// The seats of a license held at some time in `[from, to)`.
    async fn held_between(&self, license_id: &str, from: i64, to: i64) -> Result<Vec<Held>> {
        let rows: Vec<SeatRow> = sqlx::query_as(held_between_sql())
            .bind(license_id)
            .bind(from)
            .bind(to)
            .fetch_all(self.reader())
            .await?;
        Ok(rows
            .into_iter()
            .map(
                |(fingerprint, os_user, contact, assignee, device, id, from, until)| {
                    let other = contact.or(assignee).or(device).unwrap_or(id);
                    Held {
                        holder: usage::holder_key(
                            fingerprint.as_deref(),
                            os_user.as_deref(),
                            &other,
                        ),
                        from,
                        until,
                    }
                },
            )
            .collect())
    }

    /// How far a license's hours and days are rolled up.
    async fn rolled_up(&self, license_id: &str) -> Result<Option<(i64, i64)>> {
        Ok(sqlx::query_as(
            "SELECT hours_through, days_through FROM usage_rollups WHERE license_id = $1",
        )
        .bind(license_id)
        .fetch_optional(self.reader())
        .await?)
    }

    async fn usage_of(
        &self,
        license: &License,
        (from, to): (i64, i64),
        size: BucketSize,
        now: i64,
    ) -> Result<UsageReport> {
        let len = bucket_len(size);
        let from = from.div_euclid(len) * len;
        let end = to.min(now);
        let (denials_since,): (i64,) =
            sqlx::query_as("SELECT denials_since FROM usage_state WHERE id = 1")
                .fetch_one(self.reader())
                .await?;
        let mut report = UsageReport {
            license_id: license.id.clone(),
            seats_total: license.seats_total,
            bucket: size,
            denials_counted_since: denials_since,
            items: Vec::new(),
        };
        if from >= end {
            return Ok(report);
        }
        let through = match (self.rolled_up(&license.id).await?, size) {
            (Some((hours, _)), BucketSize::Hour) => hours,
            (Some((_, days)), BucketSize::Day) => days,
            (None, _) => from,
        };
        let stored: Vec<(i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT start, peak_in_use, seat_ms, holders FROM usage_buckets \
             WHERE license_id = $1 AND size = $2 AND start >= $3 AND start < $4",
        )
        .bind(&license.id)
        .bind(size)
        .bind(from)
        .bind(through.min(end))
        .fetch_all(self.reader())
        .await?;
        let mut figured: HashMap<i64, Figures> = stored
            .into_iter()
            .map(|(start, peak_in_use, seat_ms, holders)| {
                let figures = Figures {
                    peak_in_use,
                    seat_ms,
                    holders,
                };
                (start, figures)
            })
            .collect();
        let live_from = from.max(through);
        if live_from < end {
            let seats = self.held_between(&license.id, live_from, end).await?;
            for start in starts(live_from, end, len) {
                figured.insert(start, figures(start, (start + len).min(end), &seats));
            }
        }
        let denied: Vec<(i64, i64, i64)> = sqlx::query_as(
            "SELECT (hour / $1) * $1, CAST(SUM(denials) AS BIGINT), COUNT(DISTINCT holder) \
             FROM usage_denials WHERE license_id = $2 AND hour >= $3 AND hour < $4 \
             GROUP BY (hour / $1) * $1",
        )
        .bind(len)
        .bind(&license.id)
        .bind(from)
        .bind(end)
        .fetch_all(self.reader())
        .await?;
        let denied: HashMap<i64, (i64, i64)> = denied
            .into_iter()
            .map(|(start, denials, holders)| (start, (denials, holders)))
            .collect();
        let queued: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT (hour / $1) * $1, MAX(peak_queued) FROM usage_queue \
             WHERE license_id = $2 AND hour >= $3 AND hour < $4 GROUP BY (hour / $1) * $1",
        )
        .bind(len)
        .bind(&license.id)
        .bind(from)
        .bind(end)
        .fetch_all(self.reader())
        .await?;
        let queued: HashMap<i64, i64> = queued.into_iter().collect();
        report.items = starts(from, end, len)
            .map(|start| {
                let f = figured.get(&start).copied().unwrap_or_default();
                let span = (start + len).min(end) - start;
                let counted = start + len > denials_since;
                let (denials, denied_holders) = denied.get(&start).copied().unwrap_or((0, 0));
                UsageBucket {
                    start,
                    peak_in_use: f.peak_in_use,
                    avg_in_use: (f.seat_ms as f64 / span as f64 * 100.0).round() / 100.0,
                    denials: counted.then_some(denials),
                    denied_holders: counted.then_some(denied_holders),
                    peak_queued: queued.get(&start).copied().unwrap_or(0),
                    holders: f.holders,
                    seat_ms: f.seat_ms,
                }
            })
            .collect();
        Ok(report)
    }

    /// One license's period, against what was bought.
    async fn summary_of(&self, license: &License, days: i64, now: i64) -> Result<UsageSummaryItem> {
        let start = usage::day_of(now) - (days - 1) * DAY_MS;
        let report = self
            .usage_of(license, (start, now), BucketSize::Hour, now)
            .await?;
        let items = &report.items;
        let peaks: Vec<i64> = items.iter().map(|b| b.peak_in_use).collect();
        let peak = peaks.iter().copied().max().unwrap_or(0);
        let p95_in_use = usage::p95(peaks);
        let seat_ms: i64 = items.iter().map(|b| b.seat_ms).sum();
        let denials: i64 = items.iter().filter_map(|b| b.denials).sum();
        let most_refused_at_once = items
            .iter()
            .filter_map(|b| b.denied_holders)
            .max()
            .unwrap_or(0);
        let (denied_holders,): (i64,) = sqlx::query_as(
            "SELECT COUNT(DISTINCT holder) FROM usage_denials WHERE license_id = $1 AND hour >= $2",
        )
        .bind(&license.id)
        .bind(start)
        .fetch_one(self.reader())
        .await?;
        let cost = license.cost();
        let advice = usage::advise(&usage::Period {
            days,
            seats_total: license.seats_total,
            peak_in_use: peak,
            p95_in_use,
            denials,
            denied_holders,
            most_refused_at_once,
            cost: cost.as_ref().map(|m| {
                let yearly = license.license_type == LicenseType::Subscription;
                (m.amount_minor, m.currency.clone(), yearly)
            }),
        });
        let seats_moved = match advice.action {
            usage::AdviceAction::Reduce => license.seats_total - peak,
            usage::AdviceAction::Increase => advice.seats - license.seats_total,
            usage::AdviceAction::Keep => 0,
        };
        let at_stake_minor = match (&cost, license.seats_total) {
            (Some(m), total) if total > 0 => m.amount_minor.saturating_mul(seats_moved) / total,
            _ => 0,
        };
        let elapsed = (now - start).max(1);
        Ok(UsageSummaryItem {
            license_id: license.id.clone(),
            application_id: license.application_id.clone(),
            licensed_to: license.licensed_to.clone(),
            seat_model: license.seat_model,
            seats_total: license.seats_total,
            peak_in_use: peak,
            p95_in_use,
            avg_in_use: (seat_ms as f64 / elapsed as f64 * 100.0).round() / 100.0,
            denials,
            denied_holders,
            utilisation: match license.seats_total {
                0 => 0.0,
                total => (peak as f64 / total as f64 * 1000.0).round() / 1000.0,
            },
            cost,
            expires_on: license.expires_on,
            advice,
            at_stake_minor,
        })
    }

    /// Rolls one license's closed hours and days up, a chunk at a time; answers whether
    /// closed time is left.
    async fn roll_up_license(&self, license_id: &str, created_at: i64, now: i64) -> Result<bool> {
        let (mut hours_through, mut days_through) = match self.rolled_up(license_id).await? {
            Some(through) => through,
            None => {
                let (first,): (Option<i64>,) =
                    sqlx::query_as("SELECT MIN(created_at) FROM seats WHERE license_id = $1")
                        .bind(license_id)
                        .fetch_one(self.reader())
                        .await?;
                let first = first.unwrap_or(created_at).min(created_at);
                (usage::hour_of(first), usage::day_of(first))
            }
        };
        // An hour is closed a few seconds after its end, once the seat operations of its
        // last moments have committed.
        let settled = now - SETTLE_MS;
        let (closed_hour, closed_day) = (usage::hour_of(settled), usage::day_of(settled));
        if hours_through >= closed_hour && days_through >= closed_day {
            return Ok(false);
        }
        let mut rows = Vec::new();
        for (size, through, closed) in [
            (BucketSize::Hour, &mut hours_through, closed_hour),
            (BucketSize::Day, &mut days_through, closed_day),
        ] {
            if *through >= closed {
                continue;
            }
            let len = bucket_len(size);
            let end = closed.min(*through + ROLLUP_CHUNK_MS);
            let seats = self.held_between(license_id, *through, end).await?;
            for start in starts(*through, end, len) {
                let f = figures(start, start + len, &seats);
                if f.seat_ms > 0 {
                    rows.push((size, start, f));
                }
            }
            *through = end;
        }
        let mut tx = self.begin_write().await?;
        for (size, start, f) in rows {
            sqlx::query(
                "INSERT INTO usage_buckets (license_id, size, start, peak_in_use, seat_ms, holders) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (license_id, size, start) DO UPDATE \
                 SET peak_in_use = excluded.peak_in_use, seat_ms = excluded.seat_ms, \
                 holders = excluded.holders",
            )
            .bind(license_id)
            .bind(size)
            .bind(start)
            .bind(f.peak_in_use)
            .bind(f.seat_ms)
            .bind(f.holders)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO usage_rollups (license_id, hours_through, days_through) VALUES ($1, $2, $3) \
             ON CONFLICT (license_id) DO UPDATE SET \
             hours_through = CASE WHEN usage_rollups.hours_through > excluded.hours_through \
               THEN usage_rollups.hours_through ELSE excluded.hours_through END, \
             days_through = CASE WHEN usage_rollups.days_through > excluded.days_through \
               THEN usage_rollups.days_through ELSE excluded.days_through END",
        )
        .bind(license_id)
        .bind(hours_through)
        .bind(days_through)
        .execute(&mut *tx)
        .await?;
        self.commit(tx).await?;
        Ok(hours_through < closed_hour || days_through < closed_day)
    }
}

#[async_trait]
impl crate::Usage for This {
    async fn usage(
        &self,
        workspace_id: &str,
        license_id: &str,
        range: (i64, i64),
        size: BucketSize,
        now: i64,
    ) -> Result<UsageReport> {
        let license: License = self
            .one_in(license_select!(), workspace_id, license_id)
            .await?;
        self.usage_of(&license, range, size, now).await
    }

    async fn usage_summary(
        &self,
        workspace_id: &str,
        days: i64,
        now: i64,
    ) -> Result<Vec<UsageSummaryItem>> {
        let licenses: Vec<License> = sqlx::query_as(
            "SELECT * FROM licenses WHERE workspace_id = $1 AND deleted_at IS NULL ORDER BY id",
        )
        .bind(workspace_id)
        .fetch_all(self.reader())
        .await?;
        let mut items = Vec::with_capacity(licenses.len());
        for license in &licenses {
            items.push(self.summary_of(license, days, now).await?);
        }
        items.sort_by(|a, b| {
            b.at_stake_minor
                .cmp(&a.at_stake_minor)
                .then_with(|| a.licensed_to.cmp(&b.licensed_to))
        });
        Ok(items)
    }

    async fn roll_up_usage(&self, now: i64) -> Result<usize> {
        let licenses: Vec<(String, i64)> =
            sqlx::query_as("SELECT id, created_at FROM licenses WHERE deleted_at IS NULL")
                .fetch_all(self.reader())
                .await?;
        let mut behind = 0;
        for (license_id, created_at) in &licenses {
            if self.roll_up_license(license_id, *created_at, now).await? {
                behind += 1;
            }
        }
        let oldest = now - KEEP_MS;
        let mut tx = self.begin_write().await?;
        for sql in [
            "DELETE FROM usage_buckets WHERE start < $1",
            "DELETE FROM usage_denials WHERE hour < $1",
            "DELETE FROM usage_queue WHERE hour < $1",
        ] {
            sqlx::query(sql).bind(oldest).execute(&mut *tx).await?;
        }
        self.commit(tx).await?;
        Ok(behind)
    }
}
