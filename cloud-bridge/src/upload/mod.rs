//! Recording upload: finished files to an S3-compatible store, nothing lost.
//!
//! * [`Upload`] is the sans-IO core for one file: it plans the parts
//!   ([`plan_parts`]), says what to do next ([`Upload::poll`] → [`Action`]) and
//!   takes what happened ([`Upload::handle`] ← [`Event`]), with `now` as a
//!   parameter. It never reads the clock, a file or a socket.
//! * Its durable state is [`Progress`] (upload id, every finished part's number,
//!   ETag and size, the phase): the daemon writes it to SQLite after every event,
//!   and [`Upload::resume`] continues from it after a crash without re-sending a
//!   finished part.
//! * Integrity: every part's ETag must equal the MD5 of the bytes we sent (S3's
//!   definition), every request body is signed with its SHA-256
//!   (`x-amz-content-sha256`), and before the local copy may go the object is
//!   verified with `HEAD`: its ETag must be the composite ETag computed here
//!   (`md5(md5(part 1) ‖ … ‖ md5(part n))-n`), its length the file's, and the
//!   `x-amz-meta-sha256` stored at creation the file's SHA-256.
//!   [`Action::DeleteLocal`] is only ever returned after that check passed.
//! * Failures are retried with exponential backoff and full jitter
//!   ([`RetryPolicy`]); refusals (credentials, permissions, a missing file) and
//!   too many consecutive failures park the upload ([`Action::Park`]) — the
//!   file stays, and the daemon tries again later.
//! * [`TokenBucket`] caps the bandwidth (time is a parameter).
//! * [`s3`] is the edge: [`s3::S3Client`] runs one [`Action`] over `reqwest`,
//!   signing with [`sigv4`], pacing bodies through the bucket.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use cloud_bridge::upload::{Action, Event, Upload, UploadPolicy};
//! let now = Instant::now();
//! // A 12 MiB file with 5 MiB parts: create, three parts, complete, verify, delete.
//! let mut up = Upload::new("rec/a.mp4", 12 << 20, "00".repeat(32), UploadPolicy::default(), 1);
//! assert!(matches!(up.poll(now), Action::Create { .. }));
//! up.handle(Event::Created { upload_id: "u1".into() }, now);
//! let Action::UploadPart { part, .. } = up.poll(now) else { panic!() };
//! assert_eq!((part.number, part.offset, part.len), (1, 0, 5 << 20));
//! ```

mod bucket;
mod machine;
pub mod s3;
pub mod sigv4;
pub mod xml;

pub use bucket::TokenBucket;
pub use machine::{
    Action, DonePart, Event, Failure, FailureKind, HeadInfo, Part, Phase, Progress, RetryPolicy, Upload,
    UploadPolicy, composite_etag, normalize_etag, plan_parts,
};

/// S3's smallest part (every part but the last).
pub const MIN_PART: u64 = 5 * 1024 * 1024;
/// S3's largest part number.
pub const MAX_PARTS: u64 = 10_000;

/// Why the upload edge could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UploadError {
    #[error("credentials file {path}: {detail}")]
    Credentials { path: String, detail: String },
    #[error("invalid endpoint {endpoint:?}: {detail}")]
    Endpoint { endpoint: String, detail: String },
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}
