//! SFU room events → store rows (meetings, participant sessions) and the seed's
//! metrics. The SFU's broadcast channel is drained by one task; the store
//! writes go through the store thread.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use sfu_core::{LeaveReason, RoomEvent};
use tokio::sync::broadcast;

use crate::metrics::Metrics;
use crate::store::{Store, StoreError, q};

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// The store's word for a leave reason.
pub fn reason(r: LeaveReason) -> &'static str {
    match r {
        LeaveReason::Left => "left",
        LeaveReason::ConnectionLost => "connection_lost",
        LeaveReason::Kicked => "kicked",
        LeaveReason::Shutdown => "shutdown",
        _ => "other",
    }
}

/// Applies room events to the store and the metrics.
#[derive(Clone)]
pub struct EventRecorder {
    pub store: Store,
    pub metrics: Arc<Metrics>,
}

impl EventRecorder {
    /// Apply one event. Store failures are logged and counted; the room goes on.
    pub async fn handle(&self, ev: RoomEvent) {
        self.metrics.observe(&ev);
        let r: Result<(), StoreError> = match ev {
            RoomEvent::RoomOpened { room, at } => {
                self.store.call(move |c| q::meeting_start(c, &room, unix(at)).map(|_| ())).await
            }
            RoomEvent::RoomClosed { room, at } => {
                self.store.call(move |c| q::meeting_end(c, &room, unix(at), "closed").map(|_| ())).await
            }
            RoomEvent::ParticipantJoined { room, identity, session, local, at } => {
                self.store
                    .call(move |c| {
                        q::session_start(c, &room, &identity, session, local, unix(at)).map(|_| ())
                    })
                    .await
            }
            RoomEvent::ParticipantLeft { room, session, reason: why, at, .. } => {
                self.store
                    .call(move |c| q::session_end(c, &room, session, unix(at), reason(why)).map(|_| ()))
                    .await
            }
            _ => Ok(()),
        };
        if let Err(e) = r {
            let kind = match e {
                StoreError::Full | StoreError::WriteFailed => "full",
                StoreError::Closed => "closed",
                _ => "other",
            };
            self.metrics.store_errors.with_label_values(&[kind]).inc();
            tracing::error!(error = %e, "room event not recorded");
        }
    }

    /// Drain `rx` until it closes. After a lag (events were missed) the meeting
    /// gauge is resynchronised from the SFU's snapshot.
    pub async fn run(self, mut rx: broadcast::Receiver<RoomEvent>, sfu: Option<sfu_core::Sfu>) {
        loop {
            match rx.recv().await {
                Ok(ev) => self.handle(ev).await,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "room events lagged; resynchronising metrics");
                    if let Some(s) = &sfu
                        && let Ok(rooms) = s.rooms().await
                    {
                        let names: Vec<String> = rooms
                            .iter()
                            .filter(|r| !r.participants.is_empty())
                            .map(|r| r.name.clone())
                            .collect();
                        let n = rooms.iter().map(|r| r.participants.len()).sum();
                        self.metrics.resync(&names, n);
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}
