//! What the server process costs, read from `/proc`.
//!
//! CPU is `utime + stime` from `/proc/PID/stat` (all threads, in clock ticks)
//! — the number the brief names — and, as a finer cross-check, the sum of
//! `sum_exec_runtime` over `/proc/PID/task/*/schedstat` (nanoseconds). RSS is
//! `VmRSS` from `/proc/PID/status`.

use std::time::Instant;

use anyhow::Context;

/// One reading of a process.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Instant,
    /// utime + stime, clock ticks.
    pub ticks: u64,
    /// stime alone (kernel), clock ticks.
    pub sys_ticks: u64,
    /// Sum of the threads' run time, ns (0 when schedstat is unavailable).
    pub sched_ns: u64,
    pub rss_kb: u64,
}

pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// `utime + stime` of `/proc/PID/stat`, parsed after the `)` that ends the command name.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ")": state(0) ppid(1) ... utime is field 14 overall → index 11 here, stime 12.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// `stime` of `/proc/PID/stat`.
pub fn parse_stat_sys_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(12)?.parse().ok()
}

pub fn parse_vm_rss_kb(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn sched_ns(pid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    dir.flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

pub fn sample(pid: u32) -> anyhow::Result<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("process {pid} is gone"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(Sample {
        at: Instant::now(),
        ticks: parse_stat_ticks(&stat).context("unreadable /proc/PID/stat")?,
        sys_ticks: parse_stat_sys_ticks(&stat).unwrap_or(0),
        sched_ns: sched_ns(pid),
        rss_kb: parse_vm_rss_kb(&status).unwrap_or(0),
    })
}

/// CPU microseconds between two samples: (from stat ticks, from schedstat).
pub fn cpu_us(a: &Sample, b: &Sample) -> (f64, f64) {
    let tick_us = 1e6 / clock_ticks_per_sec() as f64;
    (b.ticks.saturating_sub(a.ticks) as f64 * tick_us, b.sched_ns.saturating_sub(a.sched_ns) as f64 / 1000.0)
}

/// Least-squares slope and intercept of y over x.
pub fn linear_fit(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let sx: f64 = points.iter().map(|p| p.0).sum();
    let sy: f64 = points.iter().map(|p| p.1).sum();
    let sxx: f64 = points.iter().map(|p| p.0 * p.0).sum();
    let sxy: f64 = points.iter().map(|p| p.0 * p.1).sum();
    let d = n * sxx - sx * sx;
    if d.abs() < f64::EPSILON {
        return None;
    }
    let slope = (n * sxy - sx * sy) / d;
    Some((slope, (sy - slope * sx) / n))
}

pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 { v[m] } else { (v[m - 1] + v[m]) / 2.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_found_after_a_command_name_with_spaces() {
        let s = "4242 (sfu worker) S 1 4242 4242 0 -1 4194560 500 0 0 0 1234 567 0 0 20 0 5 0 100 1000000 300 1 2 3";
        assert_eq!(parse_stat_ticks(s), Some(1234 + 567));
        assert_eq!(parse_stat_sys_ticks(s), Some(567));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn our_own_process_reads_back() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_kb > 100);
        assert!(parse_vm_rss_kb("Name: x\nVmRSS:\t  2048 kB\n") == Some(2048));
    }

    #[test]
    fn a_line_fits_exactly() {
        let (m, b) = linear_fit(&[(1.0, 3.0), (2.0, 5.0), (4.0, 9.0)]).unwrap();
        assert!((m - 2.0).abs() < 1e-9 && (b - 1.0).abs() < 1e-9);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
    }
}
