//! The send timestamp every synthetic payload carries in its last 16 bytes.
//!
//! The tail of the payload is the one place no forwarder touches (VP8 picture
//! ids are rewritten at the front, header extensions are dropped or renumbered),
//! so the same stamp survives roombox, the floor and Janus.
//!
//! Layout (big endian): `send_ns: u64` (CLOCK_REALTIME, ns), `stream: u32`
//! (publisher × track × layer), `magic: u32`.

use std::time::{SystemTime, UNIX_EPOCH};

pub const STAMP_LEN: usize = 16;
const MAGIC: u32 = 0x5242_5831; // "RBX1"

/// Nanoseconds since the Unix epoch on CLOCK_REALTIME, the clock the kernel's
/// `SO_TIMESTAMPNS` receive stamps use.
pub fn realtime_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// Write the stamp into the last [`STAMP_LEN`] bytes of `payload`.
pub fn write(payload: &mut [u8], send_ns: u64, stream: u32) {
    let n = payload.len();
    assert!(n >= STAMP_LEN, "payload shorter than the stamp");
    let t = &mut payload[n - STAMP_LEN..];
    t[0..8].copy_from_slice(&send_ns.to_be_bytes());
    t[8..12].copy_from_slice(&stream.to_be_bytes());
    t[12..16].copy_from_slice(&MAGIC.to_be_bytes());
}

/// Read a stamp back: `(send_ns, stream)`, or `None` when the tail is not ours.
pub fn read(payload: &[u8]) -> Option<(u64, u32)> {
    let n = payload.len();
    if n < STAMP_LEN {
        return None;
    }
    let t = &payload[n - STAMP_LEN..];
    let magic = u32::from_be_bytes([t[12], t[13], t[14], t[15]]);
    if magic != MAGIC {
        return None;
    }
    let send_ns = u64::from_be_bytes([t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7]]);
    let stream = u32::from_be_bytes([t[8], t[9], t[10], t[11]]);
    Some((send_ns, stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_reads_back_what_was_written() {
        let mut p = vec![7u8; 100];
        write(&mut p, 1_700_000_000_123_456_789, 42);
        assert_eq!(read(&p), Some((1_700_000_000_123_456_789, 42)));
        assert_eq!(&p[..84], &[7u8; 84][..], "only the tail is touched");
    }

    #[test]
    fn foreign_or_short_payloads_carry_no_stamp() {
        assert_eq!(read(&[0u8; 8]), None);
        assert_eq!(read(&[0u8; 64]), None);
    }
}
