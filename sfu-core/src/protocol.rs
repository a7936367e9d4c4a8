//! The room protocol: JSON messages over the WebSocket at `/ws/{room}`.
//!
//! One WebSocket and one `RTCPeerConnection` per client. Every message is a JSON
//! object with a `"type"` field. `docs/protocol.md` is the reference with an
//! example session; this module is its source of truth (the serde types below).
//!
//! Negotiation is "perfect negotiation" with the server as the *polite* peer:
//! either side may send an `offer`; when offers cross, the server rolls back its
//! own and answers the client's, then offers again. Each offer/answer carries a
//! `seq` so late answers to superseded offers are recognised and dropped.

use serde::{Deserialize, Serialize};

/// Largest text frame the server accepts on the room WebSocket.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Kind of a media track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackKind {
    Audio,
    Video,
}

/// What a track shows or carries, so clients can lay out tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackSource {
    #[default]
    Camera,
    Microphone,
    Screen,
    ScreenAudio,
    /// The appliance's own room camera.
    RoomCamera,
    /// The appliance's own room microphone.
    RoomMicrophone,
}

/// A published track as other participants see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackInfo {
    /// Room-unique id, stable for the life of the publication (`"{identity}/{n}"`).
    pub id: String,
    /// The publishing participant's identity.
    pub participant: String,
    pub kind: TrackKind,
    #[serde(default)]
    pub source: TrackSource,
    /// Codec name as in SDP (`"opus"`, `"VP8"`, `"H264"`, …).
    pub codec: String,
    /// Simulcast layers by rid, lowest first (`["q","h","f"]`); empty when not simulcast.
    #[serde(default)]
    pub layers: Vec<String>,
    #[serde(default)]
    pub muted: bool,
}

/// A participant as others see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    pub identity: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub tracks: Vec<TrackInfo>,
    /// True for the appliance's own in-process participant (the room).
    #[serde(default)]
    pub local: bool,
}

/// An ICE server handed to clients (TURN on-prem; never public STUN by default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// Messages from the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// First message on the socket (within 10 s): the access token and options.
    Join {
        token: String,
        /// Subscribe to every track as it appears (default true).
        #[serde(default = "yes")]
        auto_subscribe: bool,
    },
    /// An SDP offer from the client (it added or removed tracks).
    Offer { sdp: String, seq: u64 },
    /// The client's answer to a server `offer` with the same `seq`.
    Answer { sdp: String, seq: u64 },
    /// A trickled ICE candidate (`candidate` is the `a=candidate` value, without `a=`);
    /// `null`/absent candidate means end of candidates.
    Candidate {
        #[serde(default)]
        candidate: Option<String>,
        #[serde(default, rename = "sdpMid")]
        sdp_mid: Option<String>,
    },
    /// Describe what the client is about to publish, before its offer: lets the
    /// server name and classify the tracks by `mid`.
    Publish { tracks: Vec<PublishTrack> },
    /// Receive a track; `width`/`height` is the tile size so the server picks the
    /// simulcast layer that fits. Sending it again changes the size.
    Subscribe {
        track: String,
        #[serde(default)]
        width: Option<u32>,
        #[serde(default)]
        height: Option<u32>,
    },
    /// Stop receiving a track.
    Unsubscribe { track: String },
    /// The client muted or unmuted one of its tracks.
    Mute { track: String, muted: bool },
    /// Keep-alive; answered by `pong`.
    Ping {
        #[serde(default)]
        id: u64,
    },
    /// Leave the room and close the PeerConnection.
    Leave {},
}

fn yes() -> bool {
    true
}

/// One track a client is about to publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishTrack {
    /// The transceiver's mid in the client's next offer.
    pub mid: String,
    pub kind: TrackKind,
    #[serde(default)]
    pub source: TrackSource,
}

/// Messages from the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Answer to `join`: who you are and who is here.
    Joined {
        room: String,
        you: ParticipantInfo,
        participants: Vec<ParticipantInfo>,
        ice_servers: Vec<IceServer>,
        /// Identity of the current active speaker, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        active_speaker: Option<String>,
        /// The room is being recorded: show the recording banner (absent = false).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        recording: bool,
    },
    /// The room started (`true`) or stopped (`false`) being recorded: show or
    /// hide the recording banner.
    Recording {
        recording: bool,
    },
    ParticipantJoined {
        participant: ParticipantInfo,
    },
    ParticipantLeft {
        identity: String,
    },
    TrackPublished {
        track: TrackInfo,
    },
    TrackUnpublished {
        track: String,
    },
    /// A track was muted or unmuted (by its publisher or by an admin).
    TrackMuted {
        track: String,
        muted: bool,
    },
    /// An SDP offer from the server (subscriptions changed).
    Offer {
        sdp: String,
        seq: u64,
    },
    /// The answer to the client's `offer` with the same `seq`.
    Answer {
        sdp: String,
        seq: u64,
    },
    /// A subscribed track now arrives on this transceiver (`mid`).
    Subscribed {
        track: String,
        mid: String,
    },
    Unsubscribed {
        track: String,
    },
    /// Which simulcast layer the server now forwards for a subscribed track.
    Layer {
        track: String,
        rid: Option<String>,
    },
    /// The loudest participant changed.
    ActiveSpeaker {
        identity: Option<String>,
    },
    /// The server's view of this client's connection: 0 (lost) to 3 (good).
    ConnectionQuality {
        score: u8,
        bitrate_bps: u64,
        loss_permille: u16,
    },
    /// An admin muted one of your tracks: stop sending until unmuted.
    MutedByAdmin {
        track: String,
        muted: bool,
    },
    Pong {
        id: u64,
    },
    /// A request was refused; the room goes on.
    Error {
        code: ErrorCode,
        message: String,
    },
    /// You were removed from the room.
    Kicked {
        reason: String,
    },
    /// The server is shutting down or the room closed; reconnect after `retry_after_ms`.
    Closing {
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
}

/// Machine-readable error codes of [`ServerMessage::Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadMessage,
    Unauthorized,
    Forbidden,
    RoomFull,
    TooManyRooms,
    TooManyTracks,
    BadSdp,
    UnknownTrack,
    Overloaded,
    Internal,
}

/// The chat message carried over the data channel labelled `"chat"`.
/// Clients send `{"text": "…"}`; the server stamps `from` and `ts` (Unix ms) and
/// relays it to everyone else in the room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<u64>,
}

/// Largest chat text relayed (bytes).
pub const MAX_CHAT_BYTES: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_parses_with_defaults() {
        let m: ClientMessage = serde_json::from_str(r#"{"type":"join","token":"t"}"#).unwrap();
        assert_eq!(m, ClientMessage::Join { token: "t".into(), auto_subscribe: true });
    }

    #[test]
    fn unknown_types_and_fields_are_errors() {
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"launch"}"#).is_err());
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"leave","x":1}"#).is_err());
        assert!(serde_json::from_str::<ClientMessage>(r#"[1,2]"#).is_err());
    }

    /// The input path of `fuzz/fuzz_targets/signaling_json.rs`, on inputs a
    /// hostile client would try: whatever parses serializes back to the same
    /// message, everything else is an error (never a panic, never a stack
    /// overflow).
    #[test]
    fn hostile_json_is_refused_or_round_trips() {
        let deep = "[".repeat(100_000);
        let deep_obj = format!(r#"{{"type":"join","token":{}"#, "[".repeat(50_000));
        let nasty: Vec<&[u8]> = vec![
            b"",
            b"{",
            b"null",
            b"[]",
            b"\"join\"",
            br#"{"type":"join"}"#,
            br#"{"type":"join","token":1}"#,
            br#"{"type":"join","token":"t","auto_subscribe":"yes"}"#,
            br#"{"type":"offer","sdp":"x","seq":-1}"#,
            br#"{"type":"offer","sdp":"x","seq":18446744073709551616}"#,
            br#"{"type":"subscribe","track":"a","width":1e99}"#,
            br#"{"type":"subscribe","track":"a","width":-5}"#,
            br#"{"type":"ping","id":1,"id":2}"#,
            br#"{"type":"publish","tracks":[{"mid":"0","kind":"hologram"}]}"#,
            br#"{"type":"publish","tracks":[{"mid":"0","kind":"video","extra":1}]}"#,
            br#"{"type":"candidate","candidate":null,"sdpMid":null}"#,
            br#"{"type":"leave"}"#,
            br#"{"type":"mute","track":"\u0000\ud800","muted":true}"#,
            b"{\"type\":\"join\",\"token\":\"\xff\xfe\"}",
            br#"{"text":"hi","from":"forged","ts":1}"#,
            br#"{"text":null}"#,
            deep.as_bytes(),
            deep_obj.as_bytes(),
        ];
        let mut parsed = 0;
        for n in &nasty {
            if let Ok(m) = serde_json::from_slice::<ClientMessage>(n) {
                parsed += 1;
                let back: ClientMessage = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
                assert_eq!(back, m);
            }
            let _ = serde_json::from_slice::<ChatMessage>(n);
        }
        // only the well-formed ones parse: candidate, leave
        assert_eq!(parsed, 2);
        // a chat message may carry a forged sender; the engine overwrites it (engine tests)
        let c: ChatMessage = serde_json::from_slice(br#"{"text":"hi","from":"forged","ts":1}"#).unwrap();
        assert_eq!(c.from.as_deref(), Some("forged"));
    }

    #[test]
    fn server_messages_are_tagged() {
        let s =
            serde_json::to_string(&ServerMessage::ActiveSpeaker { identity: Some("bob".into()) }).unwrap();
        assert_eq!(s, r#"{"type":"active_speaker","identity":"bob"}"#);
    }
}
