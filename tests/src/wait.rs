//! Waiting on conditions with a deadline (never a fixed sleep).

use std::time::{Duration, Instant};

use anyhow::anyhow;

/// How often a condition is re-checked.
pub const POLL: Duration = Duration::from_millis(100);

/// Call `check` until it returns `Ok`, at most `timeout`. An `Err` means "not
/// yet": the last one is part of the timeout error, so the failure says what
/// was seen instead of what was wanted.
pub async fn wait_until<T, F>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: AsyncFnMut() -> anyhow::Result<T>,
{
    let start = Instant::now();
    loop {
        let last = match check().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if start.elapsed() >= timeout {
            return Err(anyhow!(
                "timed out after {:.1} s waiting for {what}: {last:#}",
                timeout.as_secs_f64()
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}
