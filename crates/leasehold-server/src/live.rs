//! The live feed: seat changes published by the handlers and the sweeper, streamed to
//! consoles as server-sent events (`GET /v1/events/stream`), filtered to the workspace.

use crate::error::ApiResult;
use crate::extract::{ApiQuery, Principal};
use crate::AppState;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use leasehold_core::Permission;
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::broadcast;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LiveEvent {
    #[serde(skip)]
    pub workspace_id: String,
    pub license_id: String,
    /// e.g. `seat.taken`, `seat.heartbeat`, `seat.released`, `seat.expired`, `license.updated`.
    pub kind: String,
}

pub struct LiveHub {
    sender: broadcast::Sender<LiveEvent>,
}

impl Default for LiveHub {
    fn default() -> Self {
        LiveHub {
            sender: broadcast::channel(4096).0,
        }
    }
}

impl LiveHub {
    pub fn publish(&self, workspace_id: &str, license_id: &str, kind: &str) {
        // No subscriber is fine: nobody is watching.
        let _ = self.sender.send(LiveEvent {
            workspace_id: workspace_id.to_string(),
            license_id: license_id.to_string(),
            kind: kind.to_string(),
        });
    }

    pub fn subscribe(&self) -> broadcast::Receiver<LiveEvent> {
        self.sender.subscribe()
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
    ApiQuery(query): ApiQuery<StreamQuery>,
) -> ApiResult<Sse<impl futures_core::Stream<Item = Result<Event, Infallible>>>> {
    principal.require(Permission::LicenseView)?;
    let mut receiver = state.live.subscribe();
    let workspace_id = principal.workspace_id;
    let stream = async_stream::stream! {
        yield Ok(Event::default().event("ready").data("{}"));
        loop {
            match receiver.recv().await {
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
