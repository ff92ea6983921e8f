//! The live feed: seat changes published by the handlers and the sweeper, streamed to
//! consoles as server-sent events (`GET /v1/events/stream`), filtered to the workspace.

use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiQuery, Principal};
use crate::AppState;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::sse::{Event, KeepAlive, Sse};
use leasehold_core::Permission;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

/// The PostgreSQL channel live events cross nodes on.
const CHANNEL: &str = "leasehold_live";
/// How often an open stream checks that its token or session still holds.
const RECHECK_EVERY: Duration = Duration::from_secs(5);
/// The most event streams one token or member holds open at once (DESIGN §11) ...
pub const MAX_STREAMS_PER_PRINCIPAL: usize = 16;
/// ... and one workspace.
pub const MAX_STREAMS_PER_WORKSPACE: usize = 256;

/// The event streams open now, by token or member and by workspace.
#[derive(Default)]
struct StreamCounts {
    by_principal: HashMap<String, usize>,
    by_workspace: HashMap<String, usize>,
}

impl StreamCounts {
    /// Counts a stream in, unless its principal or workspace has all it may open.
    fn open(&mut self, principal: &str, workspace: &str) -> bool {
        let held =
            |counts: &HashMap<String, usize>, key: &str| counts.get(key).copied().unwrap_or(0);
        if held(&self.by_principal, principal) >= MAX_STREAMS_PER_PRINCIPAL
            || held(&self.by_workspace, workspace) >= MAX_STREAMS_PER_WORKSPACE
        {
            return false;
        }
        *self.by_principal.entry(principal.to_string()).or_default() += 1;
        *self.by_workspace.entry(workspace.to_string()).or_default() += 1;
        true
    }

    fn close(&mut self, principal: &str, workspace: &str) {
        for (counts, key) in [
            (&mut self.by_principal, principal),
            (&mut self.by_workspace, workspace),
        ] {
            if let Some(count) = counts.get_mut(key) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    counts.remove(key);
                }
            }
        }
    }
}

/// An open event stream's place in the counts, given back when the stream ends.
struct StreamSlot {
    counts: Arc<Mutex<StreamCounts>>,
    principal: String,
    workspace: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.counts.lock() {
            counts.close(&self.principal, &self.workspace);
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LiveEvent {
    #[serde(skip)]
    pub workspace_id: String,
    pub license_id: String,
    /// e.g. `seat.taken`, `seat.heartbeat`, `seat.released`, `seat.expired`, `license.updated`.
    pub kind: String,
}

/// What crosses nodes in one `NOTIFY`: the changes one node published meanwhile.
#[derive(Debug, Serialize, Deserialize)]
struct Wire {
    node: String,
    changes: Vec<Change>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Change {
    workspace_id: String,
    license_id: String,
    kind: String,
}

/// The most changes one `NOTIFY` carries (its payload stays far below PostgreSQL's 8000
/// bytes).
const CHANGES_PER_NOTIFY: usize = 32;

pub struct LiveHub {
    sender: broadcast::Sender<LiveEvent>,
    node: String,
    /// To the task that NOTIFYs other nodes (set when the store has several).
    outbound: std::sync::OnceLock<tokio::sync::mpsc::Sender<Change>>,
    /// The client protocol's licenses, dropped by the changes this feed carries.
    pub licenses: crate::license_cache::LicenseCache,
    /// The live leases whose heartbeats this node absorbs, made stale by the same changes.
    pub heartbeats: crate::heartbeats::LeaseBook,
    streams: Arc<Mutex<StreamCounts>>,
    /// When each license's last heartbeat was announced.
    beats_announced: Mutex<HashMap<String, std::time::Instant>>,
}

/// The least time between two announced heartbeats of one license: a heartbeat changes
/// no seat and no cache, and a console only needs to know that it should look again.
const HEARTBEAT_ANNOUNCED_EVERY: Duration = Duration::from_millis(250);

impl Default for LiveHub {
    fn default() -> Self {
        LiveHub {
            sender: broadcast::channel(4096).0,
            node: uuid::Uuid::new_v4().to_string(),
            outbound: std::sync::OnceLock::new(),
            licenses: Default::default(),
            heartbeats: Default::default(),
            streams: Default::default(),
            beats_announced: Default::default(),
        }
    }
}

impl LiveHub {
    /// A hub whose license cache keeps entries at most `ttl` without a change notice, and
    /// whose node absorbs heartbeats in `heartbeats`.
    pub fn new(
        license_ttl: std::time::Duration,
        heartbeats: crate::heartbeats::LeaseBook,
    ) -> LiveHub {
        LiveHub {
            licenses: crate::license_cache::LicenseCache::new(license_ttl),
            heartbeats,
            ..LiveHub::default()
        }
    }

    pub fn publish(&self, workspace_id: &str, license_id: &str, kind: &str) {
        if kind == "seat.heartbeat" && !self.announces_heartbeat(license_id) {
            return;
        }
        self.licenses.changed(license_id, kind);
        self.heartbeats.changed(license_id, kind);
        // No subscriber is fine: nobody is watching.
        let _ = self.sender.send(LiveEvent {
            workspace_id: workspace_id.to_string(),
            license_id: license_id.to_string(),
            kind: kind.to_string(),
        });
        if let Some(outbound) = self.outbound.get() {
            let change = Change {
                workspace_id: workspace_id.to_string(),
                license_id: license_id.to_string(),
                kind: kind.to_string(),
            };
            // A full queue drops a heartbeat's message rather than slow anyone (the
            // consoles of other nodes catch up on the next event). Any other change
            // makes other nodes read what they hold of the license again (cached
            // licenses, leases in memory), so it waits for room instead, off the caller.
            if let Err(tokio::sync::mpsc::error::TrySendError::Full(change)) =
                outbound.try_send(change)
            {
                if change.kind != "seat.heartbeat" {
                    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                        let outbound = outbound.clone();
                        runtime.spawn(async move {
                            let _ = outbound.send(change).await;
                        });
                    }
                }
            }
        }
    }

    /// Whether a heartbeat of `license_id` is announced: only to someone listening (a
    /// console, a waiter, other nodes), and at most every 250 ms per license.
    fn announces_heartbeat(&self, license_id: &str) -> bool {
        if self.sender.receiver_count() == 0 && self.outbound.get().is_none() {
            return false;
        }
        let now = std::time::Instant::now();
        let Ok(mut announced) = self.beats_announced.lock() else {
            return true;
        };
        match announced.get_mut(license_id) {
            Some(at) if now.duration_since(*at) < HEARTBEAT_ANNOUNCED_EVERY => false,
            Some(at) => {
                *at = now;
                true
            }
            None => {
                announced.insert(license_id.to_string(), now);
                true
            }
        }
    }

    fn deliver_remote(&self, payload: &str) {
        match serde_json::from_str::<Wire>(payload) {
            Ok(wire) if wire.node != self.node => {
                for change in wire.changes {
                    self.licenses.changed(&change.license_id, &change.kind);
                    self.heartbeats.changed(&change.license_id, &change.kind);
                    let _ = self.sender.send(LiveEvent {
                        workspace_id: change.workspace_id,
                        license_id: change.license_id,
                        kind: change.kind,
                    });
                }
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "live notifications: unreadable payload"),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<LiveEvent> {
        self.sender.subscribe()
    }

    /// A place for one more event stream of this principal (`kind:id`) in this workspace,
    /// or `429 RATE_LIMITED` when either has all it may open.
    fn open_stream(&self, principal: &str, workspace: &str) -> ApiResult<StreamSlot> {
        let opened = self
            .streams
            .lock()
            .map(|mut counts| counts.open(principal, workspace))
            .unwrap_or(false);
        if !opened {
            return Err(ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMITED",
                format!(
                    "too many open event streams (at most {MAX_STREAMS_PER_PRINCIPAL} per token or member, \
                     {MAX_STREAMS_PER_WORKSPACE} per workspace): close one first"
                ),
            ));
        }
        Ok(StreamSlot {
            counts: self.streams.clone(),
            principal: principal.to_string(),
            workspace: workspace.to_string(),
        })
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// Only this license's changes.
    pub license_id: Option<String>,
}

/// Seat changes as they happen (server-sent events named `seat`, data `{license_id, kind}`).
/// Browsers reconnect by themselves after a network drop; a `lagged` event asks them to
/// reload what they show.
#[utoipa::path(get, path = "/v1/events/stream", tag = "audit", params(StreamQuery), security(("bearer" = [])),
    responses((status = 200, description = "text/event-stream")))]
pub async fn stream(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<StreamQuery>,
) -> ApiResult<Sse<impl futures_core::Stream<Item = Result<Event, Infallible>>>> {
    principal.require(Permission::LicenseView)?;
    let who = format!(
        "{}:{}",
        principal.actor.kind,
        principal.actor.id.as_deref().unwrap_or_default()
    );
    let slot = state.live.open_stream(&who, &principal.workspace_id)?;
    let mut receiver = state.live.subscribe();
    let workspace_id = principal.workspace_id;
    // Only what authenticates is kept for the rechecks, not every header of the request.
    let mut credentials = HeaderMap::new();
    for name in [header::AUTHORIZATION, header::COOKIE] {
        for value in headers.get_all(&name) {
            credentials.append(name.clone(), value.clone());
        }
    }
    let stream = async_stream::stream! {
        // Held as long as the stream: dropped when the client goes away.
        let _slot = slot;
        yield Ok(Event::default().event("ready").data("{}"));
        let mut recheck = tokio::time::interval_at(
            tokio::time::Instant::now() + RECHECK_EVERY,
            RECHECK_EVERY,
        );
        loop {
            let received = tokio::select! {
                received = receiver.recv() => received,
                _ = recheck.tick() => {
                    // A revoked token, an ended session, a removed member or a role that
                    // may no longer view licenses ends the stream (a browser reconnects,
                    // is refused, and stops).
                    let still = Principal::authenticate(&state, &credentials, true).await;
                    match still {
                        Ok(p) if p.workspace_id == workspace_id
                            && p.require(Permission::LicenseView).is_ok() => continue,
                        // The store failing for a moment is no reason to drop the console.
                        Err(e) if e.status.is_server_error() => continue,
                        _ => break,
                    }
                }
            };
            match received {
                Ok(event) if event.kind == "lagged" && event.workspace_id.is_empty() => {
                    yield Ok(Event::default().event("lagged").data("{}"));
                }
                Ok(event) => {
                    if event.workspace_id != workspace_id {
                        continue;
                    }
                    if query.license_id.as_deref().is_some_and(|id| id != event.license_id) {
                        continue;
                    }
                    let data = serde_json::to_string(&event).unwrap_or_default();
                    yield Ok(Event::default().event("seat").data(data));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    yield Ok(Event::default().event("lagged").data("{}"));
                }
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    };
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Connects this node's live feed to the others' (PostgreSQL `LISTEN/NOTIFY`); nothing to
/// do on a single-node store. Answers the tasks to stop at shutdown.
pub async fn spawn_backplane(state: &AppState) -> Vec<tokio::task::JoinHandle<()>> {
    let messages = match state.store.listen(CHANNEL).await {
        Ok(Some(messages)) => messages,
        Ok(None) => return Vec::new(),
        Err(error) => {
            tracing::warn!(%error, "live notifications across nodes are off: LISTEN failed");
            return Vec::new();
        }
    };
    let (outbound, mut queue) = tokio::sync::mpsc::channel::<Change>(8192);
    if state.live.outbound.set(outbound).is_err() {
        return Vec::new();
    }
    let sender_state = state.clone();
    // One NOTIFY per batch of what queued meanwhile, repeats dropped (an event only asks
    // consoles and caches to look again): under load, a NOTIFY carries many changes
    // instead of each costing PostgreSQL a transaction of its own.
    let notifier = tokio::spawn(async move {
        while let Some(first) = queue.recv().await {
            let mut changes = vec![first];
            let mut taken = 1;
            while changes.len() < CHANGES_PER_NOTIFY && taken < 8 * CHANGES_PER_NOTIFY {
                taken += 1;
                match queue.try_recv() {
                    Ok(change) if changes.contains(&change) => {}
                    Ok(change) => changes.push(change),
                    Err(_) => break,
                }
            }
            let wire = Wire {
                node: sender_state.live.node.clone(),
                changes,
            };
            let payload = serde_json::to_string(&wire).unwrap_or_default();
            // Other nodes drop what they hold of a license on these changes (cached
            // licenses, leases in memory): a change other than a heartbeat is tried again
            // a few times before it is given up.
            let attempts = if wire.changes.iter().all(|c| c.kind == "seat.heartbeat") {
                1
            } else {
                5
            };
            for attempt in 1..=attempts {
                match sender_state.store.notify(CHANNEL, &payload).await {
                    Ok(()) => break,
                    Err(error) if attempt == attempts => {
                        tracing::warn!(%error, "live notifications: NOTIFY failed");
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100 * attempt)).await,
                }
            }
        }
    });
    let receiver_state = state.clone();
    let listener = tokio::spawn(async move {
        use futures_util::StreamExt;
        let mut messages = messages;
        while let Some(message) = messages.next().await {
            match message {
                Some(payload) => receiver_state.live.deliver_remote(&payload),
                // Reconnected: what was sent meanwhile is lost, so every console reloads
                // and every cached license is read again.
                None => {
                    receiver_state.live.licenses.clear();
                    receiver_state.live.heartbeats.clear();
                    let _ = receiver_state.live.sender.send(LiveEvent {
                        workspace_id: String::new(),
                        license_id: String::new(),
                        kind: "lagged".into(),
                    });
                }
            }
        }
    });
    vec![notifier, listener]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_counted_per_principal_and_per_workspace() {
        let mut counts = StreamCounts::default();
        for _ in 0..MAX_STREAMS_PER_PRINCIPAL {
            assert!(counts.open("token:a", "w1"));
        }
        assert!(!counts.open("token:a", "w1"), "the principal's limit");
        counts.close("token:a", "w1");
        assert!(
            counts.open("token:a", "w1"),
            "a closed stream gives its place back"
        );
        let mut n = MAX_STREAMS_PER_PRINCIPAL;
        let mut member = 0;
        while n < MAX_STREAMS_PER_WORKSPACE {
            member += 1;
            for _ in 0..MAX_STREAMS_PER_PRINCIPAL.min(MAX_STREAMS_PER_WORKSPACE - n) {
                assert!(counts.open(&format!("member:{member}"), "w1"));
                n += 1;
            }
        }
        assert!(!counts.open("token:new", "w1"), "the workspace's limit");
        assert!(
            counts.open("token:new", "w2"),
            "another workspace has its own"
        );
        for _ in 0..MAX_STREAMS_PER_PRINCIPAL {
            counts.close("token:a", "w1");
        }
        assert!(
            !counts.by_principal.contains_key("token:a"),
            "no entry is left behind"
        );
        assert!(counts.open("token:new", "w1"));
    }
}
