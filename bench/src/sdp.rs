//! Just enough SDP reading for the floor relay: per m-line its kind, mid,
//! payload types by codec name, and the session's header-extension ids.

/// One m-line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MLine {
    pub kind: String,
    pub mid: String,
    /// (payload type, codec name as in `a=rtpmap`, e.g. `"VP8"`).
    pub rtpmap: Vec<(u8, String)>,
    /// `a=rid:` values with direction `send`.
    pub send_rids: Vec<String>,
    pub direction: String,
}

impl MLine {
    /// Payload type of the first codec named `codec` (case-insensitive).
    pub fn pt_of(&self, codec: &str) -> Option<u8> {
        self.rtpmap.iter().find(|(_, c)| c.eq_ignore_ascii_case(codec)).map(|(pt, _)| *pt)
    }
}

/// What the floor needs from an SDP.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub mlines: Vec<MLine>,
    /// `a=extmap` id of `urn:ietf:params:rtp-hdrext:sdes:mid`.
    pub ext_mid: Option<u8>,
    /// `a=extmap` id of `urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id`.
    pub ext_rid: Option<u8>,
}

pub fn summarize(sdp: &str) -> Summary {
    let mut s = Summary::default();
    for line in sdp.lines() {
        let line = line.trim_end();
        if let Some(rest) = line.strip_prefix("m=") {
            let kind = rest.split(' ').next().unwrap_or("").to_string();
            s.mlines.push(MLine { kind, ..Default::default() });
            continue;
        }
        let Some(attr) = line.strip_prefix("a=") else { continue };
        if let Some(rest) = attr.strip_prefix("extmap:") {
            let mut it = rest.split_whitespace();
            let id = it.next().and_then(|v| v.split('/').next()).and_then(|v| v.parse::<u8>().ok());
            let uri = it.next().unwrap_or("");
            match uri {
                "urn:ietf:params:rtp-hdrext:sdes:mid" => s.ext_mid = s.ext_mid.or(id),
                "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id" => s.ext_rid = s.ext_rid.or(id),
                _ => {}
            }
            continue;
        }
        let Some(m) = s.mlines.last_mut() else { continue };
        if let Some(mid) = attr.strip_prefix("mid:") {
            m.mid = mid.to_string();
        } else if let Some(rest) = attr.strip_prefix("rtpmap:") {
            let mut it = rest.split_whitespace();
            let pt = it.next().and_then(|v| v.parse::<u8>().ok());
            let codec = it.next().and_then(|v| v.split('/').next()).unwrap_or("");
            if let Some(pt) = pt {
                m.rtpmap.push((pt, codec.to_string()));
            }
        } else if let Some(rest) = attr.strip_prefix("rid:") {
            let mut it = rest.split_whitespace();
            if let (Some(rid), Some("send")) = (it.next(), it.next()) {
                m.send_rids.push(rid.to_string());
            }
        } else if matches!(attr, "sendrecv" | "sendonly" | "recvonly" | "inactive") {
            m.direction = attr.to_string();
        }
    }
    s
}

/// Find a header extension by id in a packet's extension block (RFC 8285,
/// one-byte and two-byte forms). `ext` is the block after the 4-byte
/// profile/length word; `two_byte` says which form.
pub fn find_ext(ext: &[u8], two_byte: bool, want: u8) -> Option<&[u8]> {
    let mut i = 0;
    while i < ext.len() {
        if two_byte {
            if i + 2 > ext.len() {
                return None;
            }
            let (id, len) = (ext[i], ext[i + 1] as usize);
            if id == 0 {
                i += 1;
                continue;
            }
            let v = ext.get(i + 2..i + 2 + len)?;
            if id == want {
                return Some(v);
            }
            i += 2 + len;
        } else {
            let b = ext[i];
            if b == 0 {
                i += 1;
                continue;
            }
            let id = b >> 4;
            let len = (b & 0x0f) as usize + 1;
            if id == 15 {
                return None;
            }
            let v = ext.get(i + 1..i + 1 + len)?;
            if id == want {
                return Some(v);
            }
            i += 1 + len;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\na=rtpmap:111 opus/48000/2\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=mid:1\r\na=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n\
a=sendonly\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\na=rid:q send\r\na=rid:h send\r\na=rid:f send\r\n";

    #[test]
    fn an_offer_summarizes_to_kinds_pts_rids_and_extension_ids() {
        let s = summarize(OFFER);
        assert_eq!(s.ext_mid, Some(4));
        assert_eq!(s.ext_rid, Some(10));
        assert_eq!(s.mlines.len(), 2);
        assert_eq!(s.mlines[0].pt_of("opus"), Some(111));
        assert_eq!(s.mlines[1].pt_of("vp8"), Some(96));
        assert_eq!(s.mlines[1].send_rids, ["q", "h", "f"]);
        assert_eq!(s.mlines[1].direction, "sendonly");
    }

    #[test]
    fn extensions_are_found_in_both_forms() {
        // one-byte: id 4 len 1 "0", padding, id 10 len 1 "f"
        let one = [0x40, b'0', 0x00, 0xa0, b'f', 0, 0, 0];
        assert_eq!(find_ext(&one, false, 10), Some(&b"f"[..]));
        assert_eq!(find_ext(&one, false, 4), Some(&b"0"[..]));
        assert_eq!(find_ext(&one, false, 5), None);
        let two = [4, 1, b'0', 10, 2, b'h', b'i', 0];
        assert_eq!(find_ext(&two, true, 10), Some(&b"hi"[..]));
        // truncated input never panics
        assert_eq!(find_ext(&[0x4f], false, 4), None);
    }
}
