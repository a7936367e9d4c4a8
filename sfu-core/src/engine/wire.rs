//! Small parsers of network input the engine needs before str0m sees it:
//! the STUN USERNAME (to demultiplex a new peer by its ICE ufrag) and a scan
//! of an SDP offer's codecs (to refuse a room's forbidden codecs clearly).
//! Both are total over arbitrary input and fuzzed (`fuzz/`).

use crate::config::CodecName;

const STUN_MAGIC: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const ATTR_USERNAME: u16 = 0x0006;

/// The local (server-side) ufrag of a STUN request: USERNAME is
/// `"<receiver ufrag>:<sender ufrag>"`. `None` for anything else.
pub fn stun_local_ufrag(buf: &[u8]) -> Option<&str> {
    if buf.len() < 20 || buf[0] & 0xc0 != 0 || buf[4..8] != STUN_MAGIC {
        return None;
    }
    let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    let body = buf.get(20..20 + len)?;
    let mut i = 0;
    while i + 4 <= body.len() {
        let t = u16::from_be_bytes([body[i], body[i + 1]]);
        let l = u16::from_be_bytes([body[i + 2], body[i + 3]]) as usize;
        let v = body.get(i + 4..i + 4 + l)?;
        if t == ATTR_USERNAME {
            let s = std::str::from_utf8(v).ok()?;
            return s.split(':').next().filter(|u| !u.is_empty());
        }
        i += 4 + l.div_ceil(4) * 4;
    }
    None
}

/// One m-line of an SDP offer, as far as codec policy cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedMedia {
    pub kind: String,
    /// Port 0: rejected/stopped by the offerer.
    pub disabled: bool,
    /// Media codec names from `a=rtpmap` (lowercase), repair formats left out.
    pub codecs: Vec<String>,
}

/// Scan an SDP's m-lines and their rtpmaps. Never fails: unparsable lines are
/// skipped (str0m's parser gives the real verdict on the SDP).
pub fn scan_sdp(sdp: &str) -> Vec<OfferedMedia> {
    let mut out: Vec<OfferedMedia> = Vec::new();
    for line in sdp.lines().take(10_000) {
        let line = line.trim_end();
        if let Some(m) = line.strip_prefix("m=") {
            let mut it = m.split(' ');
            let kind = it.next().unwrap_or("").to_ascii_lowercase();
            let disabled = it.next() == Some("0");
            out.push(OfferedMedia { kind, disabled, codecs: Vec::new() });
        } else if let Some(r) = line.strip_prefix("a=rtpmap:") {
            let Some(cur) = out.last_mut() else { continue };
            let Some(name) = r.split(' ').nth(1).and_then(|e| e.split('/').next()) else { continue };
            let name = name.to_ascii_lowercase();
            if matches!(name.as_str(), "rtx" | "red" | "ulpfec" | "flexfec-03" | "telephone-event" | "cn")
                || cur.codecs.len() >= 64
            {
                continue;
            }
            if !cur.codecs.contains(&name) {
                cur.codecs.push(name);
            }
        }
    }
    out
}

/// Refuse an offer that gives one payload type two meanings: a different
/// `a=rtpmap` or `a=fmtp` for the same number in two m-lines (or twice in one).
/// RFC 8843 §9.1 forbids it in a BUNDLE group, browsers repeat a payload type
/// across m-lines only with the same codec and parameters, and str0m 0.25's
/// answerer panics on it ("Pt locked multiple times" when two of its codec
/// entries both lock onto the remote number), so it must not reach str0m:
/// a publisher's offer would take the whole process down.
pub fn check_payload_types(sdp: &str) -> Result<(), String> {
    use std::collections::HashMap;
    type Meaning<'a> = (Option<&'a str>, Option<&'a str>); // (rtpmap, fmtp)
    fn same(a: Option<&str>, b: Option<&str>) -> bool {
        match (a, b) {
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
            (a, b) => a == b,
        }
    }
    fn show(m: &Meaning) -> String {
        format!("{} {}", m.0.unwrap_or("(no rtpmap)"), m.1.unwrap_or("(no fmtp)"))
    }
    let mut sections: Vec<HashMap<&str, Meaning>> = vec![HashMap::new()];
    for line in sdp.lines().take(10_000) {
        let line = line.trim_end();
        if line.starts_with("m=") {
            sections.push(HashMap::new());
            continue;
        }
        let (is_rtpmap, rest) = match (line.strip_prefix("a=rtpmap:"), line.strip_prefix("a=fmtp:")) {
            (Some(r), _) => (true, r),
            (_, Some(r)) => (false, r),
            _ => continue,
        };
        let (pt, value) = rest.split_once(' ').unwrap_or((rest, ""));
        let value = value.trim();
        let Some(cur) = sections.last_mut() else { continue };
        let entry = cur.entry(pt).or_insert((None, None));
        let slot = if is_rtpmap { &mut entry.0 } else { &mut entry.1 };
        match slot {
            Some(earlier) if !earlier.eq_ignore_ascii_case(value) => {
                return Err(format!(
                    "payload type {pt} is given twice in one m-line (\"{earlier}\", \"{value}\")"
                ));
            }
            _ => *slot = Some(value),
        }
    }
    let mut seen: HashMap<&str, Meaning> = HashMap::new();
    for section in &sections {
        for (pt, m) in section {
            match seen.get(pt) {
                Some(earlier) if !(same(earlier.0, m.0) && same(earlier.1, m.1)) => {
                    return Err(format!(
                        "payload type {pt} means \"{}\" in one m-line and \"{}\" in another",
                        show(earlier),
                        show(m)
                    ));
                }
                Some(_) => {}
                None => {
                    seen.insert(pt, *m);
                }
            }
        }
    }
    Ok(())
}

/// Map an SDP codec name to the configured names.
pub fn codec_name(sdp_name: &str) -> Option<CodecName> {
    match sdp_name.to_ascii_lowercase().as_str() {
        "opus" => Some(CodecName::Opus),
        "vp8" => Some(CodecName::Vp8),
        "h264" => Some(CodecName::H264),
        "vp9" => Some(CodecName::Vp9),
        "av1" | "av1x" => Some(CodecName::Av1),
        _ => None,
    }
}

/// `Err(names)` when an enabled audio/video m-line offers no codec the room allows.
pub fn check_codecs(media: &[OfferedMedia], allowed: &[CodecName]) -> Result<(), String> {
    for m in media {
        if m.disabled || !(m.kind == "audio" || m.kind == "video") {
            continue;
        }
        let ok = m.codecs.iter().any(|c| codec_name(c).is_some_and(|n| allowed.contains(&n)));
        if !ok {
            let names = if m.codecs.is_empty() { "none".to_string() } else { m.codecs.join(", ") };
            return Err(format!("{} m-line offers {names}; this room allows {allowed:?}", m.kind));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stun_with_username(u: &[u8]) -> Vec<u8> {
        let mut v = vec![0x00, 0x01, 0, 0, 0x21, 0x12, 0xa4, 0x42];
        v.extend_from_slice(&[7; 12]);
        let padded = u.len().div_ceil(4) * 4;
        v.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        v.extend_from_slice(&(u.len() as u16).to_be_bytes());
        v.extend_from_slice(u);
        v.resize(v.len() + padded - u.len(), 0);
        let len = (v.len() - 20) as u16;
        v[2..4].copy_from_slice(&len.to_be_bytes());
        v
    }

    #[test]
    fn stun_username_gives_the_local_ufrag() {
        assert_eq!(stun_local_ufrag(&stun_with_username(b"srv1:cli2")), Some("srv1"));
        let mut truncated = stun_with_username(b"srv1:cli2");
        truncated.truncate(26);
        assert_eq!(stun_local_ufrag(&truncated), None);
        assert_eq!(stun_local_ufrag(&[0x80; 40]), None);
        assert_eq!(stun_local_ufrag(&stun_with_username(b":x")), None);
    }

    #[test]
    fn a_payload_type_with_two_meanings_is_refused_and_a_repeated_one_is_not() {
        let audio =
            "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10\r\n";
        let video = "m=video 9 UDP/TLS/RTP/SAVPF 96 35\r\na=rtpmap:96 VP8/90000\r\n\
                     a=rtpmap:35 H264/90000\r\na=fmtp:35 packetization-mode=1;profile-level-id=4d001f\r\n";
        // a browser's second camera m-line repeats the same numbers with the same meaning
        assert_eq!(check_payload_types(&format!("v=0\r\n{audio}{video}{video}")), Ok(()));
        // the same number, another codec, parameters or none, in another m-line or the same one
        let h264_in_audio = format!("v=0\r\n{audio}a=rtpmap:35 H264/90000\r\n{video}");
        for bad in [
            h264_in_audio,
            format!("v=0\r\n{audio}{video}{}", video.replace("4d001f", "42e01f")),
            format!("v=0\r\n{audio}{}", audio.replace("opus/48000/2", "VP8/90000")),
            format!("v=0\r\n{audio}a=fmtp:111 minptime=20\r\n"),
        ] {
            let e = check_payload_types(&bad).unwrap_err();
            assert!(e.contains("payload type"), "{e}");
        }
        assert_eq!(check_payload_types("garbage\0\u{1}m=\na=rtpmap:\na=fmtp:"), Ok(()));
    }

    #[test]
    fn sdp_scan_finds_codecs_and_policy_refuses_forbidden_ones() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\n";
        let m = scan_sdp(sdp);
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].codecs, vec!["vp8".to_string()]);
        assert!(check_codecs(&m, &[CodecName::Opus, CodecName::Vp8]).is_ok());
        let e = check_codecs(&m, &[CodecName::Opus, CodecName::H264]).unwrap_err();
        assert!(e.contains("vp8"), "{e}");
        assert!(scan_sdp("garbage\0\u{1}m=").len() <= 1);
    }
}
