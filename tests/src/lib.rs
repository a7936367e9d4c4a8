//! Helpers for the cross-crate tests: headless Chromium over the DevTools
//! protocol, network namespaces, an in-process web server, access tokens.
//!
//! A browser test binary is a `harness = false` test target whose `main` is
//! [`browser_test_main!`]: it enters a private network namespace (Chromium
//! gathers no loopback ICE candidates) before any thread exists, then runs
//! each `async fn` test in turn and prints its run time.
//!
//! ```no_run
//! use std::time::Duration;
//! use roombox_tests::{Browser, LaunchOptions, WebServer, netns::LAN_IP};
//!
//! async fn fake_camera_plays() -> anyhow::Result<()> {
//!     let web = WebServer::start((LAN_IP, 0).into(), None).await?;
//!     let browser = Browser::launch(LaunchOptions::default()).await?;
//!     let tab = browser.new_tab(&web.url("/pages/loopback.html")).await?;
//!     tab.wait_for("frames decoded", "window.framesDecoded() > 30", Duration::from_secs(20)).await?;
//!     Ok(())
//! }
//! roombox_tests::browser_test_main!(fake_camera_plays);
//! ```

pub mod browser;
pub mod cdp;
pub mod https;
pub mod netns;
pub mod runner;
pub mod sfu;
pub mod stats;
pub mod wait;
pub mod web;

pub use browser::{Browser, LaunchOptions, Tab};
pub use sfu::TestSfu;
pub use stats::{PcStats, WatchedVideo};
pub use wait::wait_until;
pub use web::WebServer;

use sfu_core::auth::{Claims, Grants, sign_hs256};

/// The HS256 secret test SFUs are started with.
pub const TEST_SECRET: &[u8] = b"roombox-tests-secret-0123456789abcdef";

/// Now, Unix seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// An access token for `identity` in `room`, signed with [`TEST_SECRET`], valid 15 minutes.
pub fn mint(room: &str, identity: &str, grants: Grants) -> String {
    let claims = Claims::new(identity, room, grants, unix_now(), 900);
    sign_hs256(&claims, TEST_SECRET).expect("TEST_SECRET is long enough")
}

/// Grants to publish and subscribe.
pub fn publisher() -> Grants {
    Grants { publish: true, subscribe: true, ..Grants::default() }
}

/// Grants to subscribe only.
pub fn viewer() -> Grants {
    Grants { subscribe: true, ..Grants::default() }
}

/// `target/browser-tests/…`: where tests write screenshots and reports.
/// The target directory is `CARGO_TARGET_DIR` when set, else the one the
/// running test binary lives in (`TARGET/debug/deps/…`).
pub fn artifacts_dir() -> std::path::PathBuf {
    let from_exe = || {
        let exe = std::env::current_exe().ok()?;
        let deps = exe.parent()?;
        (deps.file_name()? == "deps").then(|| deps.parent()?.parent().map(|p| p.to_path_buf()))?
    };
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .or_else(from_exe)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("browser-tests")
}
