//! Negotiation inside the engine: the room protocol's offer/answer (perfect
//! negotiation, server polite), media added by a remote offer (WHIP/WHEP/room),
//! trickle ICE and ICE restart, and the data-channel chat relay.

use std::sync::Arc;
use std::time::Instant;

use str0m::IceCreds;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::channel::ChannelData;
use str0m::media::{Direction, MediaAdded, MediaKind, Rid};

use super::forward::new_downtrack;
use super::*;
use crate::protocol::{ChatMessage, ClientMessage, ErrorCode, MAX_CHAT_BYTES};

fn rid_rank(rid: &str) -> usize {
    match rid.to_ascii_lowercase().as_str() {
        "q" | "l" | "low" | "0" => 0,
        "h" | "m" | "mid" | "1" => 1,
        "f" | "hi" | "high" | "2" => 2,
        _ => 1,
    }
}

impl Engine {
    /// A room-protocol message from a joined WebSocket client.
    pub fn client_message(&mut self, now: Instant, id: ParticipantId, msg: ClientMessage) {
        if !self.participants.get(&id).is_some_and(|p| p.is_room_client()) {
            return;
        }
        match msg {
            ClientMessage::Join { .. } => self.error(id, ErrorCode::BadMessage, "already joined"),
            ClientMessage::Offer { sdp, seq } => self.on_client_offer(now, id, &sdp, seq),
            ClientMessage::Answer { sdp, seq } => self.on_client_answer(now, id, &sdp, seq),
            ClientMessage::Candidate { candidate, .. } => {
                if let Some(c) = candidate {
                    let line = c
                        .strip_prefix("a=")
                        .unwrap_or(&c)
                        .strip_prefix("candidate:")
                        .map(|_| ())
                        .map(|_| c.clone());
                    let s = line.unwrap_or(c);
                    self.add_remote_candidate(id, &s);
                }
            }
            ClientMessage::Publish { tracks } => {
                let max = self.config.limits.max_tracks_per_participant;
                if let Some(p) = self.participants.get_mut(&id) {
                    if !p.grants.publish {
                        self.error(id, ErrorCode::Forbidden, "your token does not allow publishing");
                    } else if tracks.len() + p.published.len() > max {
                        self.count_drop("too_many_tracks");
                        self.error(id, ErrorCode::TooManyTracks, &format!("at most {max} tracks"));
                    } else {
                        p.pending_publish.extend(tracks);
                        p.pending_publish.truncate(64);
                    }
                }
            }
            ClientMessage::Subscribe { track, width, .. } => {
                if !self.participants[&id].grants.subscribe {
                    return self.error(id, ErrorCode::Forbidden, "your token does not allow subscribing");
                }
                match self.track_by_id(id, &track) {
                    Some(tk) => self.subscribe(now, id, tk, width),
                    None => self.error(id, ErrorCode::UnknownTrack, &format!("no track {track:?}")),
                }
            }
            ClientMessage::Unsubscribe { track } => match self.track_by_id(id, &track) {
                Some(tk) => {
                    self.unsubscribe(now, id, tk);
                    self.out.push_back(Output::Signal(id, ServerMessage::Unsubscribed { track }));
                }
                None => self.error(id, ErrorCode::UnknownTrack, &format!("no track {track:?}")),
            },
            ClientMessage::Mute { track, muted } => {
                let tk = self.participants[&id]
                    .published
                    .iter()
                    .copied()
                    .find(|tk| self.tracks.get(tk).is_some_and(|t| *t.id == *track));
                match tk {
                    Some(tk) => {
                        if let Some(t) = self.tracks.get_mut(&tk)
                            && t.muted != muted
                        {
                            t.muted = muted;
                            self.track_muted_changed(now, tk);
                        }
                    }
                    None => {
                        self.error(id, ErrorCode::UnknownTrack, &format!("you publish no track {track:?}"))
                    }
                }
            }
            ClientMessage::Ping { id: n } => {
                self.out.push_back(Output::Signal(id, ServerMessage::Pong { id: n }))
            }
            ClientMessage::Leave {} => self.remove_participant(now, id, LeaveReason::Left),
        }
        self.process(now);
    }

    fn error(&mut self, id: ParticipantId, code: ErrorCode, message: &str) {
        self.out.push_back(Output::Signal(id, ServerMessage::Error { code, message: message.to_string() }));
    }

    fn track_by_id(&self, id: ParticipantId, track: &str) -> Option<TrackKey> {
        let room = self.rooms.get(&self.participants.get(&id)?.room)?;
        room.tracks
            .iter()
            .copied()
            .find(|tk| self.tracks.get(tk).is_some_and(|t| &*t.id == track && t.owner != id))
    }

    /// Auto-subscription of a newcomer to what is already published.
    pub(super) fn subscribe_all(&mut self, now: Instant, id: ParticipantId) {
        let Some(p) = self.participants.get(&id) else { return };
        let filter: fn(TrackKind) -> bool = match &p.kind {
            Kind::Remote { role: PeerRole::Room { auto_subscribe: true } } if p.grants.subscribe => |_| true,
            Kind::Local { subscribe: LocalSubscription::All } => |_| true,
            Kind::Local { subscribe: LocalSubscription::AllAudio } => |k| k == TrackKind::Audio,
            _ => return,
        };
        let tracks: Vec<TrackKey> = self
            .rooms
            .get(&p.room)
            .map(|r| {
                r.tracks
                    .iter()
                    .copied()
                    .filter(|tk| self.tracks.get(tk).is_some_and(|t| t.owner != id && filter(t.kind)))
                    .collect()
            })
            .unwrap_or_default();
        for tk in tracks {
            self.subscribe(now, id, tk, None);
        }
    }

    fn on_client_offer(&mut self, now: Instant, id: ParticipantId, sdp: &str, seq: u64) {
        if sdp.len() > self.config.limits.max_body_bytes {
            return self.error(id, ErrorCode::BadSdp, "offer too large");
        }
        let room = self.participants[&id].room.clone();
        if let Err(e) = wire::check_codecs(&wire::scan_sdp(sdp), self.config.room_codecs(&room)) {
            return self.error(id, ErrorCode::BadSdp, &e);
        }
        if let Err(e) = wire::check_payload_types(sdp) {
            return self.error(id, ErrorCode::BadSdp, &e);
        }
        let offer = match SdpOffer::from_sdp_string(sdp) {
            Ok(o) => o,
            Err(e) => return self.error(id, ErrorCode::BadSdp, &e.to_string()),
        };
        let p = self.participants.get_mut(&id).expect("checked");
        // Perfect negotiation, server polite: a crossing offer rolls ours back.
        if let Some(pending) = p.neg.pending.take() {
            tracing::debug!(participant = id, seq = pending.seq, "glare: rolling back the server offer");
            self.void_offer(id, &pending.added);
        }
        let Some(rtc) = self.participants.get_mut(&id).and_then(|p| p.rtc.as_mut()) else { return };
        match rtc.sdp_api().accept_offer(offer) {
            Ok(answer) => {
                self.out.push_back(Output::Signal(
                    id,
                    ServerMessage::Answer { sdp: answer.to_sdp_string(), seq },
                ));
            }
            Err(e) => {
                self.drain(id);
                return self.error(id, ErrorCode::BadSdp, &e.to_string());
            }
        }
        self.drain(id);
        // media added by the offer are handled from the queue before we offer again
        self.process(now);
        self.maybe_offer(now, id);
    }

    fn on_client_answer(&mut self, now: Instant, id: ParticipantId, sdp: &str, seq: u64) {
        let Some(p) = self.participants.get_mut(&id) else { return };
        if p.neg.pending.as_ref().map(|x| x.seq) != Some(seq) {
            tracing::debug!(participant = id, seq, "stale answer dropped");
            return;
        }
        let answer = match SdpAnswer::from_sdp_string(sdp) {
            Ok(a) => a,
            Err(e) => return self.error(id, ErrorCode::BadSdp, &e.to_string()),
        };
        let pending = p.neg.pending.take().expect("checked");
        let Some(rtc) = p.rtc.as_mut() else { return };
        if let Err(e) = rtc.sdp_api().accept_answer(pending.pending, answer) {
            self.drain(id);
            // the offer is void: retry its subscriptions in a fresh one
            self.void_offer(id, &pending.added);
            self.error(id, ErrorCode::BadSdp, &e.to_string());
            return;
        }
        for (_, mid) in &pending.added {
            if let Some(d) = p.downtracks.iter_mut().find(|d| d.mid == Some(*mid)) {
                d.ready = true;
                d.negotiated = true;
            } else if let Some(d) = p.neg.parked.iter_mut().find(|d| d.mid == Some(*mid)) {
                // unsubscribed while the offer was out: now it exists, set it inactive
                d.negotiated = true;
                if !p.neg.removals.contains(mid) {
                    p.neg.removals.push(*mid);
                }
            }
        }
        self.drain(id);
        for (tk, _) in pending.added {
            self.allocate_one(now, id);
            self.request_keyframes_for_track(now, tk);
        }
        self.maybe_offer(now, id);
    }

    /// The outstanding server offer is void (rolled back on glare, or its
    /// answer failed): its new m-lines never existed, reused ones go back to
    /// the parking (their direction was changed locally: set inactive again),
    /// and its subscriptions are wanted again.
    fn void_offer(&mut self, id: ParticipantId, added: &[(TrackKey, Mid)]) {
        let Some(p) = self.participants.get_mut(&id) else { return };
        let mut again: Vec<(TrackKey, Option<u32>)> = Vec::new();
        for (tk, mid) in added {
            if let Some(i) = p.downtracks.iter().position(|d| d.mid == Some(*mid) && !d.ready) {
                let d = p.downtracks.remove(i);
                again.push((*tk, d.want_width));
                if d.negotiated {
                    p.neg.park(d);
                }
            }
            p.neg.parked.retain(|d| !(d.mid == Some(*mid) && !d.negotiated));
            if let Some(t) = self.tracks.get_mut(tk) {
                t.subscribers.retain(|x| *x != id);
            }
        }
        again.append(&mut p.neg.wanted);
        p.neg.wanted = again;
    }

    /// Send a server offer if subscriptions changed and none is outstanding.
    pub(super) fn maybe_offer(&mut self, _now: Instant, id: ParticipantId) {
        let Some(p) = self.participants.get_mut(&id) else { return };
        if !p.is_room_client()
            || p.neg.pending.is_some()
            || (p.neg.wanted.is_empty() && p.neg.removals.is_empty())
        {
            return;
        }
        let wanted = std::mem::take(&mut p.neg.wanted);
        let removals = std::mem::take(&mut p.neg.removals);
        let Some(rtc) = p.rtc.as_mut() else { return };
        let mut api = rtc.sdp_api();
        for mid in &removals {
            api.set_direction(*mid, Direction::Inactive);
        }
        let mut added: Vec<(TrackKey, Mid)> = Vec::new();
        let mut new_downtracks = Vec::new();
        let mut subscribed = Vec::new();
        for (tk, width) in wanted {
            let Some(t) = self.tracks.get(&tk) else { continue };
            // an inactive m-line of the same kind is reused before a new one is added
            let reuse = p.neg.parked.iter().position(|d| d.negotiated && d.kind == t.kind && d.mid.is_some());
            let d = match reuse {
                Some(i) => {
                    let mut d = p.neg.parked.swap_remove(i);
                    let mid = d.mid.expect("checked");
                    // inactive, then sendonly: a direction change even when the
                    // session never saw the inactive one (a rolled-back offer)
                    api.set_direction(mid, Direction::Inactive);
                    api.set_direction(mid, Direction::SendOnly);
                    d.source = Some(tk);
                    d.bind = Bind::Track;
                    d.follow = None;
                    d.ready = false;
                    d.pt = None;
                    d.selector = LayerSelector::default();
                    d.policy = LayerPolicy::default();
                    d.rewriter.detach();
                    d.rewriter.set_clock_rate(t.clock_rate);
                    d.want_width = width;
                    d.last_layer_sent = None;
                    d.alloc_bps = 0;
                    d
                }
                None => {
                    let kind = if t.kind == TrackKind::Audio { MediaKind::Audio } else { MediaKind::Video };
                    let mid = api.add_media(
                        kind,
                        Direction::SendOnly,
                        Some(t.owner_identity.to_string()),
                        Some(t.id.to_string()),
                        None,
                    );
                    new_downtrack(id, tk, t.kind, t.clock_rate, Bind::Track, None, Some(mid), false, width)
                }
            };
            let mid = d.mid.expect("room-protocol down-tracks have an m-line");
            added.push((tk, mid));
            subscribed.push(ServerMessage::Subscribed { track: t.id.to_string(), mid: mid.to_string() });
            new_downtracks.push(d);
        }
        let Some((offer, pending)) = api.apply() else {
            // nothing to negotiate after all (e.g. every wanted track is gone)
            for d in new_downtracks.into_iter().filter(|d| d.negotiated) {
                p.neg.park(d);
            }
            return;
        };
        p.neg.server_seq += 1;
        let seq = p.neg.server_seq;
        p.downtracks.extend(new_downtracks);
        p.neg.pending = Some(PendingOffer { seq, pending, added: added.clone() });
        for (tk, _) in &added {
            if let Some(t) = self.tracks.get_mut(tk)
                && !t.subscribers.contains(&id)
            {
                t.subscribers.push(id);
            }
        }
        self.out.push_back(Output::Signal(id, ServerMessage::Offer { sdp: offer.to_sdp_string(), seq }));
        for m in subscribed {
            self.out.push_back(Output::Signal(id, m));
        }
        self.drain(id);
    }

    /// The remote's offer added an m-line.
    pub(super) fn on_media_added(&mut self, now: Instant, id: ParticipantId, m: MediaAdded) {
        let Some(p) = self.participants.get_mut(&id) else { return };
        let role = match p.role() {
            Some(r) => r.clone(),
            None => return,
        };
        let kind = if m.kind == MediaKind::Audio { TrackKind::Audio } else { TrackKind::Video };
        let we_receive = matches!(m.direction, Direction::RecvOnly | Direction::SendRecv);
        let we_send = matches!(m.direction, Direction::SendOnly | Direction::SendRecv);
        match role {
            PeerRole::Whip | PeerRole::Room { .. } if we_receive => {
                if !p.grants.publish {
                    if p.is_room_client() {
                        self.error(id, ErrorCode::Forbidden, "your token does not allow publishing");
                    }
                    return;
                }
                if p.published.len() >= self.config.limits.max_tracks_per_participant {
                    let max = self.config.limits.max_tracks_per_participant;
                    let room_client = p.is_room_client();
                    self.count_drop("too_many_tracks");
                    if room_client {
                        self.error(
                            id,
                            ErrorCode::TooManyTracks,
                            &format!("at most {max} tracks; m-line {} ignored", m.mid),
                        );
                    }
                    return;
                }
                let mid_s = m.mid.to_string();
                let source = match p.pending_publish.iter().position(|t| t.mid == mid_s) {
                    Some(i) => p.pending_publish.remove(i).source,
                    None if kind == TrackKind::Audio => TrackSource::Microphone,
                    None => TrackSource::Camera,
                };
                // simulcast layers, lowest first
                let mut rids: Vec<String> = m
                    .simulcast
                    .as_ref()
                    .map(|s| {
                        let l = if s.recv.is_empty() { &s.send } else { &s.recv };
                        l.iter().map(|x| x.rid.to_string()).collect()
                    })
                    .unwrap_or_default();
                rids.truncate(crate::media::forwarder::MAX_LAYERS);
                rids.sort_by_key(|r| rid_rank(r));
                let layer_rids: Vec<Option<Rid>> = if rids.is_empty() {
                    vec![None]
                } else {
                    rids.iter().map(|r| Some(Rid::from(r.as_str()))).collect()
                };
                // codec: the first negotiated payload type of the m-line
                let codec = p.rtc.as_ref().and_then(|rtc| {
                    let media = rtc.media(m.mid)?;
                    let pts = media.remote_pts();
                    let spec = pts.iter().find_map(|pt| {
                        rtc.codec_config().params().iter().find(|x| x.pt() == *pt).map(|x| x.spec())
                    })?;
                    Some(spec)
                });
                let codec = codec.map(|s| {
                    let name = match s.codec {
                        Codec::Opus => "opus",
                        Codec::Vp8 => "VP8",
                        Codec::Vp9 => "VP9",
                        Codec::H264 => "H264",
                        Codec::Av1 => "AV1",
                        _ => "other",
                    };
                    let vf = match s.codec {
                        Codec::Vp8 => VideoFormat::Vp8,
                        Codec::Vp9 => VideoFormat::Vp9,
                        Codec::H264 => VideoFormat::H264,
                        Codec::Av1 => VideoFormat::Av1,
                        _ => VideoFormat::Other,
                    };
                    (s.codec, name, s.format, s.clock_rate.get(), vf)
                });
                let tk = self.new_track(id, kind, source, Some(m.mid), layer_rids, rids, codec);
                self.publish_track(now, tk);
            }
            PeerRole::Whep { target } if we_send => {
                let (bind, follow) = match &target {
                    Some(t) => (Bind::Identity, Some(Arc::<str>::from(t.as_str()))),
                    None => (Bind::Speaker, None),
                };
                let clock = if kind == TrackKind::Audio { 48_000 } else { 90_000 };
                let mut d = new_downtrack(id, 0, kind, clock, bind, follow.clone(), Some(m.mid), true, None);
                d.source = None;
                p.downtracks.push(d);
                let idx = p.downtracks.len() - 1;
                let room = p.room.clone();
                // bind to what exists now
                let tk = match bind {
                    Bind::Identity => self.rooms.get(&room).and_then(|r| {
                        r.tracks.iter().copied().find(|tk| {
                            self.tracks.get(tk).is_some_and(|t| {
                                t.kind == kind && Some(&*t.owner_identity) == follow.as_deref()
                            })
                        })
                    }),
                    _ => None,
                };
                if bind == Bind::Speaker {
                    self.rebind_speaker_views(now, &room);
                } else if tk.is_some() {
                    self.bind_downtrack(now, id, idx, tk);
                }
            }
            _ => {}
        }
    }

    /// A trickled remote candidate (`candidate:...`, with or without `a=`).
    pub(super) fn add_remote_candidate(&mut self, id: ParticipantId, line: &str) {
        let line = line.trim().strip_prefix("a=").unwrap_or(line.trim());
        let Ok(c) = str0m::Candidate::from_sdp_string(line) else {
            tracing::debug!(participant = id, "unparsable candidate ignored");
            return;
        };
        if let Some(rtc) = self.participants.get_mut(&id).and_then(|p| p.rtc.as_mut()) {
            rtc.add_remote_candidate(c);
            self.drain(id);
        }
    }

    /// WHIP/WHEP `PATCH` (`application/trickle-ice-sdpfrag`): trickled
    /// candidates, or an ICE restart when the fragment carries new remote
    /// credentials. Returns the server's fragment for a restart.
    pub fn patch(&mut self, now: Instant, id: ParticipantId, frag: &str) -> Result<Option<String>, SfuError> {
        if !self.participants.contains_key(&id) {
            return Err(SfuError::NoSuchParticipant { room: String::new(), identity: String::new() });
        }
        if frag.len() > self.config.limits.max_body_bytes {
            return Err(SfuError::BadSdp("fragment too large".into()));
        }
        let (mut ufrag, mut pwd) = (None, None);
        let mut candidates = Vec::new();
        for line in frag.lines().take(1000) {
            let line = line.trim();
            if let Some(u) = line.strip_prefix("a=ice-ufrag:") {
                ufrag = Some(u.to_string());
            } else if let Some(p) = line.strip_prefix("a=ice-pwd:") {
                pwd = Some(p.to_string());
            } else if line.starts_with("a=candidate:") {
                candidates.push(line.to_string());
            }
        }
        let mut answer = None;
        if let (Some(ufrag), Some(pass)) = (ufrag, pwd) {
            if ufrag.is_empty() || ufrag.len() > 256 || pass.len() < 22 || pass.len() > 256 {
                return Err(SfuError::BadSdp("ice-ufrag/ice-pwd out of range".into()));
            }
            let p = self.participants.get_mut(&id).expect("checked");
            let Some(rtc) = p.rtc.as_mut() else { return Err(SfuError::BadSdp("not a WebRTC peer".into())) };
            let local = IceCreds::new();
            {
                let mut api = rtc.direct_api();
                api.set_local_ice_credentials(local.clone());
                api.set_remote_ice_credentials(IceCreds { ufrag, pass });
            }
            if let Some(old) = p.ufrag.replace(local.ufrag.clone()) {
                self.by_ufrag.remove(&old);
            }
            self.by_ufrag.insert(local.ufrag.clone(), id);
            let mut s = format!("a=ice-ufrag:{}\r\na=ice-pwd:{}\r\n", local.ufrag, local.pass);
            for c in &self.candidates {
                s.push_str(&format!("a={}\r\n", c.to_sdp_string()));
            }
            s.push_str("a=end-of-candidates\r\n");
            answer = Some(s);
            self.drain(id);
        }
        for c in candidates {
            self.add_remote_candidate(id, &c);
        }
        self.process(now);
        Ok(answer)
    }

    /// Chat over the `"chat"` data channel: stamp and relay to everyone else.
    pub(super) fn on_chat(&mut self, now: Instant, id: ParticipantId, d: ChannelData) {
        let Some(p) = self.participants.get(&id) else { return };
        if p.chat != Some(d.id) {
            return;
        }
        if d.data.len() > MAX_CHAT_BYTES * 2 {
            self.count_drop("chat_too_large");
            return;
        }
        let Ok(mut msg) = serde_json::from_slice::<ChatMessage>(&d.data) else {
            self.count_drop("chat_garbage");
            return;
        };
        if msg.text.len() > MAX_CHAT_BYTES {
            self.count_drop("chat_too_large");
            return;
        }
        msg.from = Some(p.identity.to_string());
        msg.ts = Some(
            self.wall(now).duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
        );
        let Ok(bytes) = serde_json::to_vec(&msg) else { return };
        let members: Vec<ParticipantId> =
            self.rooms.get(&p.room).map(|r| r.participants.clone()).unwrap_or_default();
        for m in members {
            if m == id {
                continue;
            }
            let Some(o) = self.participants.get_mut(&m) else { continue };
            let (Some(ch), Some(rtc)) = (o.chat, o.rtc.as_mut()) else { continue };
            if let Some(mut c) = rtc.channel(ch)
                && let Err(e) = c.write(false, &bytes)
            {
                tracing::debug!(participant = m, error = %e, "chat write failed");
            }
            self.drain(m);
        }
    }
}
