//! Background jobs every node runs. The lease sweeper releases leases whose holders
//! stopped heartbeating (crash, reboot, closed remote session), in chunks, so a sweep of
//! many never holds the writer long. A pass visits the licenses holding seats in id
//! order, each about once, probing each for lapsed leases. Each license's leases end in one transaction that ends
//! only leases still active in it (SQLite: on the seat writer; PostgreSQL: under the
//! license's row lock), so nodes sweeping at once never end one twice.

use crate::AppState;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// How long one chunk of a sweep may take. On SQLite a chunk runs on the seat writer,
/// and live requests queued behind it wait about this long, not the whole sweep: 5 ms
/// rather than 10 brought the scale test's p99 during a sweep from 2.1× to 1.35× of
/// before, for a sweep about three times as long (debug build). On PostgreSQL it bounds
/// how long each license's row stays locked. The chunk's size follows ([`next_chunk`]):
/// a slow machine, a debug build or a busy writer sweeps fewer leases per chunk.
const CHUNK_TIME: Duration = Duration::from_millis(5);
/// Leases the first chunk ends, and the bounds of every chunk.
const FIRST_CHUNK: i64 = 100;
const MIN_CHUNK: i64 = 25;
const MAX_CHUNK: i64 = 500;
/// Between two chunks, live requests go first.
const CHUNK_PAUSE: Duration = Duration::from_millis(2);

/// The next chunk's size, after a chunk of `size` that ended `ended` leases in `took`:
/// scaled to take [`CHUNK_TIME`], growing at most twofold and only after a full chunk.
fn next_chunk(size: i64, ended: usize, took: Duration) -> i64 {
    let took_us = took.as_micros().max(1) as f64;
    let fitting = (size as f64 * CHUNK_TIME.as_micros() as f64 / took_us) as i64;
    let grown = if ended as i64 >= size { size * 2 } else { size };
    fitting.min(grown).clamp(MIN_CHUNK, MAX_CHUNK)
}

/// The most licenses the background sweep probes per tick: an idle pass costs about 3 µs
/// a license on SQLite (probing 100,000 licenses took 330 ms), so with more licenses
/// holding seats than this, a pass spans several ticks and picks up where the last
/// stopped. A full license never waits for it: a checkout ends that license's lapsed
/// leases itself before it refuses.
const PROBES_PER_TICK: usize = 10_000;
/// The most licenses one chunk probes.
const PROBES_PER_CHUNK: i64 = 1_000;

pub fn spawn(state: AppState) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(state.sweep_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut cursor = String::new();
        loop {
            tick.tick().await;
            let expired = sweep_from(&state, &mut cursor, PROBES_PER_TICK, PROBES_PER_CHUNK).await;
            crate::metrics::swept(expired);
            state.limits.retain_recent();
            // The sign-in limiter is keyed by what attackers type: its idle entries go too.
            state.login_limits.retain_recent();
        }
    })
}

/// How often closed hours and days of usage are rolled up (DESIGN §8). What is not rolled
/// up yet is computed from the ledger when asked, so this only bounds that work.
const USAGE_ROLLUP_EVERY: Duration = Duration::from_secs(60);

/// Rolls usage up from the seat ledger: at once on start (an upgrade's back-fill, a
/// month per license per round), then every minute. Every node runs it; the rows they
/// write are the same, so nothing counts twice.
pub fn spawn_usage_rollup(state: AppState) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let now = chrono::Utc::now().timestamp_millis();
            let pause = match state.store.roll_up_usage(now).await {
                Ok(0) => USAGE_ROLLUP_EVERY,
                // Back-filling: the next month at once, live requests first.
                Ok(_) => Duration::from_millis(50),
                Err(error) => {
                    tracing::warn!(%error, "usage rollup failed; retrying");
                    USAGE_ROLLUP_EVERY
                }
            };
            tokio::time::sleep(pause).await;
        }
    })
}

/// Releases every lapsed lease, a chunk at a time, in one whole pass; answers how many.
pub async fn sweep(state: &AppState) -> u64 {
    sweep_from(state, &mut String::new(), usize::MAX, PROBES_PER_CHUNK).await
}

/// Sweeps from the license `cursor` names until the last license, or until `max_probes`
/// licenses were probed, `probes_per_chunk` at most per chunk; leaves `cursor` where the
/// next pass starts (`""`: the first). A background tick is one call (public for tests).
pub async fn sweep_from(
    state: &AppState,
    cursor: &mut String,
    max_probes: usize,
    probes_per_chunk: i64,
) -> u64 {
    let mut total = 0;
    let mut probed = 0;
    let mut chunk = FIRST_CHUNK;
    loop {
        let started = Instant::now();
        let swept = match state
            .store
            .expire_leases(cursor, chunk, probes_per_chunk)
            .await
        {
            Ok(swept) => swept,
            Err(error) => {
                tracing::warn!(%error, "lease sweep failed; retrying next tick");
                break;
            }
        };
        let n = swept.expired.len() as u64;
        if n > 0 {
            chunk = next_chunk(chunk, swept.expired.len(), started.elapsed());
        }
        total += n;
        probed += swept.probed;
        // One live event per license a chunk touched, not one per lease.
        let touched: std::collections::BTreeSet<(&str, &str)> = swept
            .expired
            .iter()
            .map(|s| (s.workspace_id.as_str(), s.license_id.as_str()))
            .collect();
        for (workspace_id, license_id) in touched {
            state.live.publish(workspace_id, license_id, "seat.expired");
        }
        match swept.resume_at {
            Some(license_id) => *cursor = license_id,
            None => {
                cursor.clear();
                break;
            }
        }
        if probed >= max_probes {
            break;
        }
        if n > 0 {
            // A pause between chunks: the live requests queued meanwhile go first.
            tokio::time::sleep(CHUNK_PAUSE).await;
        }
    }
    if total > 0 {
        tracing::info!(expired = total, "released lapsed leases");
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_chunk_makes_the_next_one_smaller() {
        assert_eq!(next_chunk(100, 100, CHUNK_TIME * 2), 50);
        assert_eq!(next_chunk(400, 400, CHUNK_TIME * 4), 100);
        // Never below the floor, however slow.
        assert_eq!(next_chunk(100, 100, Duration::from_secs(1)), MIN_CHUNK);
    }

    #[test]
    fn a_quick_full_chunk_makes_the_next_one_at_most_twice_as_big() {
        assert_eq!(next_chunk(100, 100, CHUNK_TIME / 5), 200);
        assert_eq!(next_chunk(100, 100, CHUNK_TIME * 4 / 5), 125);
        assert_eq!(next_chunk(400, 400, Duration::from_micros(10)), MAX_CHUNK);
        // A short chunk (the end of the sweep, or another node took some) doesn't grow.
        assert_eq!(next_chunk(100, 30, CHUNK_TIME / 10), 100);
    }
}
