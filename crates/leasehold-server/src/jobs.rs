//! Background jobs every node runs. The lease sweeper releases leases whose holders
//! stopped heartbeating (crash, reboot, closed remote session), in chunks, so a sweep of
//! many never holds the writer long; on PostgreSQL the chunks skip rows another node has
//! locked, so nodes never release the same lease twice.

use crate::AppState;
use tokio::task::JoinHandle;

const SWEEP_CHUNK: i64 = 500;

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
                for seat in &expired {
                    state
                        .live
                        .publish(&seat.workspace_id, &seat.license_id, "seat.expired");
                }
                if n < SWEEP_CHUNK as u64 {
                    break;
                }
                tokio::task::yield_now().await;
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
