//! Background jobs every node runs. The lease sweeper releases leases whose holders
//! stopped heartbeating (crash, reboot, closed remote session), in chunks, so a sweep of
//! many never holds the writer long. Within a chunk, each license's leases end in a
//! transaction that locks the license first and ends only leases still active under that
//! lock, so nodes sweeping at once never end one twice.

use crate::AppState;
use tokio::task::JoinHandle;

/// Leases one sweep transaction ends: small enough that live requests queued behind it
/// on the writer wait milliseconds, not the whole sweep.
const SWEEP_CHUNK: i64 = 100;
/// Between two chunks, live requests go first.
const CHUNK_PAUSE: std::time::Duration = std::time::Duration::from_millis(2);

pub fn spawn(state: AppState) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(state.sweep_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            sweep(&state).await;
            state.limits.retain_recent();
        }
    })
}

/// Releases every lapsed lease, a chunk at a time; answers how many.
pub async fn sweep(state: &AppState) -> u64 {
    let mut total = 0;
    loop {
        match state.store.expire_leases(SWEEP_CHUNK).await {
            Ok(expired) => {
                let n = expired.len() as u64;
                total += n;
                // One live event per license a chunk touched, not one per lease.
                let touched: std::collections::BTreeSet<(&str, &str)> = expired
                    .iter()
                    .map(|s| (s.workspace_id.as_str(), s.license_id.as_str()))
                    .collect();
                for (workspace_id, license_id) in touched {
                    state.live.publish(workspace_id, license_id, "seat.expired");
                }
                // A short chunk is not taken as the end (another node may have ended some of
                // its leases meanwhile); a chunk that ends nothing is.
                if n == 0 {
                    break;
                }
                // A pause between chunks: SQLite's write lock is not fair, and the seat
                // writer waiting for it must get it before the next chunk does.
                tokio::time::sleep(CHUNK_PAUSE).await;
            }
            Err(error) => {
                tracing::warn!(%error, "lease sweep failed; retrying next tick");
                break;
            }
        }
    }
    if total > 0 {
        tracing::info!(expired = total, "released lapsed leases");
    }
    total
}
