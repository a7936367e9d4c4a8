//! How many people and megabits a board can take: an estimate with its inputs written down.
//!
//! Until the benchmarks have been run on each board, a profile's limits are derived from the
//! cost of forwarding one packet as measured on the x86 reference machine, scaled to the board.
//! The formula (also in `docs/boards.md`):
//!
//! ```text
//! us_per_packet  = ref_us_per_packet / core_speed
//!                + (no crypto extensions) PACKET_BYTES * soft_crypto_cycles_per_byte / cpu.max_mhz
//! packets_per_s  = forwarding_cores * UTILISATION * 1e6 / us_per_packet
//! cpu_mbps       = packets_per_s * PACKET_BYTES * 8 / 1e6
//! forward_mbps   = min(cpu_mbps, nic_mbps * NIC_SHARE)
//! participants   = largest n with n * (n - 1) * stream_mbps <= forward_mbps
//! ```
//!
//! - `ref_us_per_packet`: CPU-µs per forwarded packet on the reference machine (str0m in RTP
//!   mode, 16 subscribers: 12.7–15.8 µs, DESIGN.md; the upper end is used). Replace with the
//!   bench numbers when they exist — or better, with the same benchmark run on the board, and
//!   `core_speed = 1`.
//! - `core_speed`: one board core's speed relative to one reference core for this kind of work
//!   (single-thread integer performance; public single-core scores, rounded down).
//! - `soft_crypto_cycles_per_byte`: extra cycles per byte for SRTP (AES-CM + HMAC-SHA1, or
//!   AES-GCM) without the ARMv8 AES/PMULL/SHA instructions (table-free software AES and GHASH
//!   run at roughly 20–30 cycles/byte on Cortex-A72 class cores). With the instructions the
//!   crypto cost is already part of `ref_us_per_packet` (the reference has AES-NI).
//! - `forwarding_cores`: cores left for forwarding once capture, encode and the rest of the
//!   daemon have theirs.
//! - `stream_mbps`: an average forwarded stream (a 720p30 browser camera plus its audio).
//!   Everyone-sees-everyone is assumed, so a meeting of n forwards n·(n−1) streams.
//!
//! A profile's `max_forward_mbps` and `max_participants` may be lower than the estimate (a
//! deliberate margin) but never higher: validation rejects a profile that promises more.

use serde::{Deserialize, Serialize};

use super::CpuProfile;

/// Bytes of an average forwarded media packet (video packets are ~1200, audio ~100–200; video
/// dominates the byte count).
pub const PACKET_BYTES: f64 = 1200.0;
/// Share of the forwarding cores the SFU may use: the rest is headroom for bursts (keyframes,
/// retransmissions) and the other threads.
pub const UTILISATION: f64 = 0.7;
/// Share of the network link the SFU may fill in one direction.
pub const NIC_SHARE: f64 = 0.6;

/// `[capacity.estimate]`: the inputs of the estimate.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CapacityEstimate {
    /// CPU-µs per forwarded packet on the reference machine.
    pub ref_us_per_packet: f64,
    /// One board core relative to one reference core.
    pub core_speed: f64,
    /// Extra cycles per byte for SRTP when the CPU lacks crypto extensions.
    pub soft_crypto_cycles_per_byte: f64,
    /// Cores available for forwarding.
    pub forwarding_cores: f64,
    /// The network link, Mbit/s.
    pub nic_mbps: f64,
    /// An average forwarded stream, Mbit/s.
    pub stream_mbps: f64,
    /// Where the inputs come from, for people (which measurement, which public score).
    pub basis: String,
}

/// What the estimate gives.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimated {
    /// CPU-µs to forward one packet on this board.
    pub us_per_packet: f64,
    /// Packets per second the forwarding cores can take.
    pub packets_per_s: f64,
    /// Mbit/s the CPU can forward.
    pub cpu_mbps: f64,
    /// Mbit/s the board can forward (CPU or network, whichever is less).
    pub forward_mbps: f64,
    /// Participants in one everyone-sees-everyone meeting.
    pub participants: u32,
}

impl CapacityEstimate {
    /// Applies the formula to this board's CPU.
    pub fn derive(&self, cpu: &CpuProfile) -> Estimated {
        let mut us = self.ref_us_per_packet / self.core_speed;
        if !cpu.crypto_extensions && cpu.max_mhz > 0 {
            us += PACKET_BYTES * self.soft_crypto_cycles_per_byte / f64::from(cpu.max_mhz);
        }
        let packets_per_s = self.forwarding_cores * UTILISATION * 1e6 / us;
        let cpu_mbps = packets_per_s * PACKET_BYTES * 8.0 / 1e6;
        let forward_mbps = cpu_mbps.min(self.nic_mbps * NIC_SHARE);
        Estimated {
            us_per_packet: us,
            packets_per_s,
            cpu_mbps,
            forward_mbps,
            participants: participants_for(forward_mbps, self.stream_mbps),
        }
    }
}

/// The largest n with n·(n−1)·stream ≤ budget (at least 1: the room itself).
pub fn participants_for(budget_mbps: f64, stream_mbps: f64) -> u32 {
    // NaN and negative inputs (already rejected by validation) give the minimum.
    if stream_mbps.is_nan() || budget_mbps.is_nan() || stream_mbps <= 0.0 || budget_mbps < 0.0 {
        return 1;
    }
    let mut n: u32 = 1;
    while n < 10_000 && f64::from(n + 1) * f64::from(n) * stream_mbps <= budget_mbps {
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(crypto: bool) -> CpuProfile {
        CpuProfile { core: "test".into(), cores: 4, max_mhz: 1500, crypto_extensions: crypto }
    }

    fn est() -> CapacityEstimate {
        CapacityEstimate {
            ref_us_per_packet: 15.0,
            core_speed: 0.5,
            soft_crypto_cycles_per_byte: 25.0,
            forwarding_cores: 2.0,
            nic_mbps: 1000.0,
            stream_mbps: 1.5,
            basis: "test".into(),
        }
    }

    #[test]
    fn formula_matches_a_hand_computation() {
        // 15 / 0.5 = 30 µs; 2 cores * 0.7 * 1e6 / 30 = 46_667 pps; * 1200 B * 8 = 448 Mbit/s.
        let e = est().derive(&cpu(true));
        assert!((e.us_per_packet - 30.0).abs() < 1e-9);
        assert!((e.cpu_mbps - 448.0).abs() < 0.01, "{}", e.cpu_mbps);
        assert!((e.forward_mbps - 448.0).abs() < 0.01);
        // 17 * 16 * 1.5 = 408 <= 448 < 18 * 17 * 1.5 = 459
        assert_eq!(e.participants, 17);
    }

    #[test]
    fn missing_crypto_extensions_cost_cycles_per_byte() {
        // + 1200 B * 25 cycles/B / 1500 MHz = 20 µs
        let e = est().derive(&cpu(false));
        assert!((e.us_per_packet - 50.0).abs() < 1e-9);
        assert!(e.forward_mbps < est().derive(&cpu(true)).forward_mbps);
    }

    #[test]
    fn the_network_link_caps_forwarding() {
        let mut fast = est();
        fast.core_speed = 10.0;
        let e = fast.derive(&cpu(true));
        assert!(e.cpu_mbps > 600.0);
        assert!((e.forward_mbps - 600.0).abs() < 1e-9);
    }

    #[test]
    fn participants_grow_with_the_square_root_of_the_budget() {
        assert_eq!(participants_for(0.0, 1.5), 1);
        assert_eq!(participants_for(3.0, 1.5), 2); // 2*1*1.5 = 3
        assert_eq!(participants_for(8.9, 1.5), 2); // 3*2*1.5 = 9
        assert_eq!(participants_for(9.0, 1.5), 3);
        assert_eq!(participants_for(100.0, 0.0), 1);
        assert_eq!(participants_for(f64::NAN, 1.5), 1);
    }
}
