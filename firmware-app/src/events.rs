//! SFU room events → meetings: store rows (meetings, participant sessions),
//! the seed's metrics and the room's "live" state (the panel's LED).
//!
//! A **meeting** is a room with at least one person in it. The box's own
//! camera and microphone (an in-process, *local* participant) sit in the box's
//! room all day: they do not make a meeting on their own. [`Meetings`] turns
//! the SFU's [`RoomEvent`]s into [`MeetingChange`]s with that rule (sans IO:
//! events in, changes out); [`EventRecorder`] applies the changes to the store
//! (through its thread), the metrics and the device. Local participants are
//! recorded as sessions of the meetings they were present for, and are left out
//! of `meeting_participants_duration` and `roombox_participants` (people only).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sfu_core::{LeaveReason, RoomEvent};
use tokio::sync::broadcast;

use crate::device::Device;
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

/// What a room event means for meetings.
#[derive(Debug, Clone, PartialEq)]
pub enum MeetingChange {
    /// The first person arrived in `room`.
    Started { room: String, at: SystemTime },
    /// The last person left `room` (open sessions of local participants end with it).
    Ended { room: String, at: SystemTime },
    /// Someone is in the meeting: a person, or a local participant present when it started.
    Joined { room: String, identity: String, session: u64, local: bool, at: SystemTime },
    /// Someone left a meeting that goes on (or the last person, just before `Ended`).
    Left { room: String, session: u64, local: bool, reason: LeaveReason, duration: Duration, at: SystemTime },
}

#[derive(Debug, Default)]
struct Presence {
    /// Remote participants by SFU session.
    people: HashMap<u64, SystemTime>,
    /// Local participants (the room camera, a recorder) by session: identity.
    locals: HashMap<u64, String>,
}

/// Who is where, and so which rooms hold a meeting. Sans IO.
#[derive(Debug, Default)]
pub struct Meetings {
    rooms: HashMap<String, Presence>,
}

impl Meetings {
    pub fn new() -> Meetings {
        Meetings::default()
    }

    /// Feed one event; the changes it makes are appended to `out`.
    pub fn handle(&mut self, ev: &RoomEvent, out: &mut Vec<MeetingChange>) {
        match ev {
            RoomEvent::ParticipantJoined { room, identity, session, local, at } => {
                let p = self.rooms.entry(room.clone()).or_default();
                if *local {
                    p.locals.insert(*session, identity.clone());
                    if !p.people.is_empty() {
                        out.push(MeetingChange::Joined {
                            room: room.clone(),
                            identity: identity.clone(),
                            session: *session,
                            local: true,
                            at: *at,
                        });
                    }
                    return;
                }
                if p.people.contains_key(session) {
                    return;
                }
                if p.people.is_empty() {
                    out.push(MeetingChange::Started { room: room.clone(), at: *at });
                    let mut locals: Vec<_> = p.locals.iter().collect();
                    locals.sort();
                    for (s, id) in locals {
                        out.push(MeetingChange::Joined {
                            room: room.clone(),
                            identity: id.clone(),
                            session: *s,
                            local: true,
                            at: *at,
                        });
                    }
                }
                p.people.insert(*session, *at);
                out.push(MeetingChange::Joined {
                    room: room.clone(),
                    identity: identity.clone(),
                    session: *session,
                    local: false,
                    at: *at,
                });
            }
            RoomEvent::ParticipantLeft { room, session, reason, duration, at, .. } => {
                let Some(p) = self.rooms.get_mut(room) else { return };
                let live = !p.people.is_empty();
                if p.people.remove(session).is_some() {
                    out.push(MeetingChange::Left {
                        room: room.clone(),
                        session: *session,
                        local: false,
                        reason: *reason,
                        duration: *duration,
                        at: *at,
                    });
                    if p.people.is_empty() {
                        out.push(MeetingChange::Ended { room: room.clone(), at: *at });
                    }
                } else if p.locals.remove(session).is_some() && live {
                    out.push(MeetingChange::Left {
                        room: room.clone(),
                        session: *session,
                        local: true,
                        reason: *reason,
                        duration: *duration,
                        at: *at,
                    });
                }
                if p.people.is_empty() && p.locals.is_empty() {
                    self.rooms.remove(room);
                }
            }
            RoomEvent::RoomClosed { room, at } => {
                // Every leave came first; a meeting still open here missed some.
                if let Some(p) = self.rooms.remove(room)
                    && !p.people.is_empty()
                {
                    out.push(MeetingChange::Ended { room: room.clone(), at: *at });
                }
            }
            _ => {}
        }
    }

    /// Whether `room` holds a meeting now.
    pub fn live(&self, room: &str) -> bool {
        self.rooms.get(room).is_some_and(|p| !p.people.is_empty())
    }

    /// Rooms holding a meeting now.
    pub fn live_rooms(&self) -> Vec<String> {
        self.rooms.iter().filter(|(_, p)| !p.people.is_empty()).map(|(r, _)| r.clone()).collect()
    }

    /// People (not local participants) in every room.
    pub fn people(&self) -> usize {
        self.rooms.values().map(|p| p.people.len()).sum()
    }
}

/// Applies room events to the store, the metrics and the device's live state.
pub struct EventRecorder {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    /// The box's devices: told when a meeting starts or ends in its room.
    pub device: Option<Arc<Device>>,
    meetings: Meetings,
    changes: Vec<MeetingChange>,
}

impl EventRecorder {
    pub fn new(store: Store, metrics: Arc<Metrics>, device: Option<Arc<Device>>) -> EventRecorder {
        EventRecorder { store, metrics, device, meetings: Meetings::new(), changes: Vec::new() }
    }

    /// Who is where, as far as the events said.
    pub fn meetings(&self) -> &Meetings {
        &self.meetings
    }

    /// Apply one event. Store failures are logged and counted; the room goes on.
    pub async fn handle(&mut self, ev: RoomEvent) {
        let mut changes = std::mem::take(&mut self.changes);
        self.meetings.handle(&ev, &mut changes);
        for ch in changes.drain(..) {
            self.metrics.meeting_change(&ch);
            if let Some(d) = &self.device {
                match &ch {
                    MeetingChange::Started { room, .. } if *room == d.room() => d.set_live(true),
                    MeetingChange::Ended { room, .. } if *room == d.room() => d.set_live(false),
                    _ => {}
                }
            }
            let r: Result<(), StoreError> = match ch {
                MeetingChange::Started { room, at } => {
                    self.store.call(move |c| q::meeting_start(c, &room, unix(at)).map(|_| ())).await
                }
                MeetingChange::Ended { room, at } => {
                    self.store.call(move |c| q::meeting_end(c, &room, unix(at), "closed").map(|_| ())).await
                }
                MeetingChange::Joined { room, identity, session, local, at } => {
                    self.store
                        .call(move |c| {
                            q::session_start(c, &room, &identity, session, local, unix(at)).map(|_| ())
                        })
                        .await
                }
                MeetingChange::Left { room, session, reason: why, at, .. } => {
                    self.store
                        .call(move |c| q::session_end(c, &room, session, unix(at), reason(why)).map(|_| ()))
                        .await
                }
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
        self.changes = changes;
    }

    /// Drain `rx` until it closes. After a lag (events were missed) the meeting
    /// gauge is resynchronised from the SFU's snapshot.
    pub async fn run(mut self, mut rx: broadcast::Receiver<RoomEvent>, sfu: Option<sfu_core::Sfu>) {
        loop {
            match rx.recv().await {
                Ok(ev) => self.handle(ev).await,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "room events lagged; resynchronising metrics");
                    if let Some(s) = &sfu
                        && let Ok(rooms) = s.rooms().await
                    {
                        let people =
                            |r: &sfu_core::RoomSnapshot| r.participants.iter().filter(|p| !p.local).count();
                        let names: Vec<String> =
                            rooms.iter().filter(|r| people(r) > 0).map(|r| r.name.clone()).collect();
                        let n = rooms.iter().map(people).sum();
                        self.metrics.resync(&names, n);
                        if let Some(d) = &self.device {
                            d.set_live(names.iter().any(|r| r == d.room()));
                        }
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_000_000 + s)
    }

    fn join(room: &str, id: &str, session: u64, local: bool, at: u64) -> RoomEvent {
        RoomEvent::ParticipantJoined { room: room.into(), identity: id.into(), session, local, at: t(at) }
    }

    fn leave(room: &str, id: &str, session: u64, at: u64, dur: u64) -> RoomEvent {
        RoomEvent::ParticipantLeft {
            room: room.into(),
            identity: id.into(),
            session,
            reason: LeaveReason::Left,
            duration: Duration::from_secs(dur),
            at: t(at),
        }
    }

    fn feed(m: &mut Meetings, evs: &[RoomEvent]) -> Vec<MeetingChange> {
        let mut out = Vec::new();
        for e in evs {
            m.handle(e, &mut out);
        }
        out
    }

    #[test]
    fn the_room_camera_alone_is_not_a_meeting() {
        let mut m = Meetings::new();
        let out = feed(
            &mut m,
            &[RoomEvent::RoomOpened { room: "demo".into(), at: t(0) }, join("demo", "room", 1, true, 0)],
        );
        assert_eq!(out, []);
        assert!(!m.live("demo"));
        assert_eq!(m.people(), 0);
    }

    #[test]
    fn a_meeting_runs_from_the_first_person_to_the_last_with_the_room_in_it() {
        let mut m = Meetings::new();
        feed(&mut m, &[join("demo", "room", 1, true, 0)]);
        let out = feed(&mut m, &[join("demo", "ann", 2, false, 10), join("demo", "bob", 3, false, 20)]);
        assert_eq!(
            out,
            [
                MeetingChange::Started { room: "demo".into(), at: t(10) },
                MeetingChange::Joined {
                    room: "demo".into(),
                    identity: "room".into(),
                    session: 1,
                    local: true,
                    at: t(10)
                },
                MeetingChange::Joined {
                    room: "demo".into(),
                    identity: "ann".into(),
                    session: 2,
                    local: false,
                    at: t(10)
                },
                MeetingChange::Joined {
                    room: "demo".into(),
                    identity: "bob".into(),
                    session: 3,
                    local: false,
                    at: t(20)
                },
            ]
        );
        assert!(m.live("demo"));
        assert_eq!(m.people(), 2);
        let out = feed(&mut m, &[leave("demo", "ann", 2, 30, 20)]);
        assert!(matches!(out[..], [MeetingChange::Left { session: 2, local: false, .. }]), "{out:?}");
        let out = feed(&mut m, &[leave("demo", "bob", 3, 40, 20)]);
        assert!(
            matches!(out[..], [MeetingChange::Left { session: 3, .. }, MeetingChange::Ended { .. }]),
            "{out:?}"
        );
        assert!(!m.live("demo"));
        // The room camera is still there; the next person starts a new meeting.
        let out = feed(&mut m, &[join("demo", "cid", 4, false, 50)]);
        assert!(matches!(out[0], MeetingChange::Started { .. }) && out.len() == 3, "{out:?}");
    }

    #[test]
    fn rooms_without_a_local_participant_work_the_same() {
        let mut m = Meetings::new();
        let out = feed(&mut m, &[join("b", "x", 7, false, 0), leave("b", "x", 7, 5, 5)]);
        assert_eq!(out.len(), 4, "started, joined, left, ended: {out:?}");
        assert!(m.live_rooms().is_empty());
        // A close after missed leaves still ends the meeting.
        let out = feed(
            &mut m,
            &[join("c", "y", 8, false, 0), RoomEvent::RoomClosed { room: "c".into(), at: t(9) }],
        );
        assert_eq!(out.last(), Some(&MeetingChange::Ended { room: "c".into(), at: t(9) }));
        // Unknown leaves and repeated joins change nothing.
        let mut out = feed(&mut m, &[leave("zz", "q", 99, 1, 1)]);
        assert_eq!(out, []);
        m.handle(&join("d", "z", 9, false, 0), &mut out);
        m.handle(&join("d", "z", 9, false, 0), &mut out);
        assert_eq!(out.len(), 2);
    }
}
