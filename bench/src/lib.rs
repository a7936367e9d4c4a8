//! # roombox-bench — the measuring instruments
//!
//! Speed is a number: this crate drives the same synthetic WebRTC workload
//! against three servers in one run and prints what each costs.
//!
//! * **roombox** — the `sfu` binary from `sfu-core`, reached over WHIP/WHEP;
//! * **the floor** — [`floor`], a minimal relay in this crate that receives,
//!   decrypts, rewrites, re-encrypts and sends SRTP with the cipher str0m
//!   negotiates and `sendmmsg` batching: what any SFU must at least spend;
//! * **Janus 1.1** — [`janus`], Debian's Janus with its VideoRoom plugin over the
//!   HTTP API on loopback.
//!
//! The clients are str0m peers ([`peer`]) hosted by one epoll thread
//! ([`host`]): publishers send realistic RTP ([`media`]: VP8-shaped 3-layer
//! simulcast ≈1.5 Mbps in ~1 kB packets, Opus-sized audio at 50 pps) with a
//! send timestamp at the tail of every payload ([`stamp`]); subscribers read the
//! kernel's receive timestamp (`SO_TIMESTAMPNS`) and so measure one-way
//! latency, loss (gaps in the forwarded sequence numbers) and join time.
//! [`measure`] reads the server's CPU time and RSS from `/proc`; [`report`]
//! prints tables, writes JSON under `target/bench/`, draws SVG curves and
//! rewrites the marked sections of `docs/PERFORMANCE.md`.
//!
//! Run it with `scripts/bench` (the whole suite) or
//! `roombox-bench smoke` (seconds; checks that packets flowed, not how fast).

pub mod floor;
pub mod host;
pub mod janus;
pub mod measure;
pub mod media;
pub mod net;
pub mod peer;
pub mod report;
pub mod roombox;
pub mod scenario;
pub mod sdp;
pub mod signal;
pub mod soak;
pub mod stamp;
pub mod suite;
pub mod tap;
