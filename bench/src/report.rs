//! Tables on stdout, JSON under `target/bench/`, SVG curves, and the marked
//! sections of `docs/PERFORMANCE.md`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::measure;
use crate::scenario::{Kind, RunResult, Workload};

pub fn header() -> String {
    format!(
        "| {:<8} | {:<14} | {:>7} | {:>6} | {:>9} | {:>9} | {:>5} | {:>8} | {:>8} | {:>8} | {:>6} | {:>9} | {:>8} |",
        "server",
        "workload",
        "pkt/s",
        "Mbps",
        "CPU-µs/pk",
        "(sched)",
        "sys%",
        "p50 µs",
        "p99 µs",
        "max µs",
        "loss%",
        "join ms",
        "RSS MB"
    ) + "\n|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
}

pub fn row(r: &RunResult) -> String {
    format!(
        "| {:<8} | {:<14} | {:>7.0} | {:>6.1} | {:>9.2} | {:>9.2} | {:>5.0} | {:>8} | {:>8} | {:>8} | {:>6.2} | {:>4.0}/{:<4.0} | {:>8.1} |",
        r.server.name(),
        // '*': not every subscription carried media (refused, timed out, or starved).
        format!("{}{}", r.workload.label(), if r.subscriptions_flowing < r.subscriptions { "*" } else { "" }),
        r.pps,
        r.mbps,
        r.cpu_us_per_pkt,
        r.cpu_us_per_pkt_sched,
        r.sys_pct,
        r.lat_p50_us,
        r.lat_p99_us,
        r.lat_max_us,
        r.loss_pct,
        r.join_p50_ms,
        r.join_max_ms,
        r.rss_kb as f64 / 1024.0,
    )
}

/// Median of a metric over repeated runs of one (server, workload).
pub fn medians(results: &[RunResult]) -> BTreeMap<(Kind, String, usize), RunResult> {
    let mut groups: BTreeMap<(Kind, String, usize), Vec<&RunResult>> = BTreeMap::new();
    for r in results {
        groups.entry((r.server, r.workload.family().to_string(), r.workload.n())).or_default().push(r);
    }
    groups
        .into_iter()
        .map(|(k, v)| {
            let mut m = v[v.len() / 2].clone();
            let med = |f: &dyn Fn(&RunResult) -> f64| {
                measure::median(&mut v.iter().map(|r| f(r)).collect::<Vec<_>>())
            };
            m.cpu_us_per_pkt = med(&|r| r.cpu_us_per_pkt);
            m.cpu_us_per_pkt_sched = med(&|r| r.cpu_us_per_pkt_sched);
            m.pps = med(&|r| r.pps);
            m.mbps = med(&|r| r.mbps);
            m.lat_p50_us = med(&|r| r.lat_p50_us as f64) as u64;
            m.lat_p99_us = med(&|r| r.lat_p99_us as f64) as u64;
            m.lat_max_us = med(&|r| r.lat_max_us as f64) as u64;
            m.loss_pct = med(&|r| r.loss_pct);
            m.join_p50_ms = med(&|r| r.join_p50_ms);
            m.join_max_ms = med(&|r| r.join_max_ms);
            (k, m)
        })
        .collect()
}

/// The CPU figure the ratios use: schedstat when present (finer), else stat ticks.
pub fn cpu(r: &RunResult) -> f64 {
    if r.cpu_us_per_pkt_sched.is_finite() && r.cpu_us_per_pkt_sched > 0.0 {
        r.cpu_us_per_pkt_sched
    } else {
        r.cpu_us_per_pkt
    }
}

/// Ratios per workload: roombox ÷ floor and Janus ÷ roombox (CPU per packet).
pub fn ratios(med: &BTreeMap<(Kind, String, usize), RunResult>) -> String {
    let mut keys: Vec<(String, usize)> = med.keys().map(|(_, f, n)| (f.clone(), *n)).collect();
    keys.sort();
    keys.dedup();
    let mut s = String::from(
        "| workload | floor µs/pkt | roombox µs/pkt | Janus µs/pkt | roombox ÷ floor | Janus ÷ roombox | Janus ÷ floor |\n|---|--:|--:|--:|--:|--:|--:|\n",
    );
    let f = |v: Option<f64>| v.map(|x| format!("{x:.2}")).unwrap_or_else(|| "—".into());
    for (fam, n) in keys {
        let get = |k: Kind| med.get(&(k, fam.clone(), n)).map(cpu);
        let (fl, rb, ja) = (get(Kind::Floor), get(Kind::Roombox), get(Kind::Janus));
        let div = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b);
        let label = if fam == "fanout" { Workload::Fanout(n).label() } else { Workload::Room(n).label() };
        let _ = writeln!(
            s,
            "| {label} | {} | {} | {} | {} | {} | {} |",
            f(fl),
            f(rb),
            f(ja),
            f(div(rb, fl)),
            f(div(ja, rb)),
            f(div(ja, fl))
        );
    }
    s
}

/// RSS per peer connection: the slope of RSS over the server's peer
/// connections (publishers + subscriptions), per server and family. In the
/// fanout curve a participant is one connection, so that slope is the RSS per
/// participant; in rooms each participant holds N−1 watching connections.
pub fn rss_slopes(results: &[RunResult]) -> BTreeMap<(Kind, String), f64> {
    let mut pts: BTreeMap<(Kind, String), Vec<(f64, f64)>> = BTreeMap::new();
    for r in results {
        let connections = match r.workload {
            Workload::Fanout(n) => n + 1,
            Workload::Room(n) => n * n,
        };
        pts.entry((r.server, r.workload.family().into()))
            .or_default()
            .push((connections as f64, r.rss_kb as f64 / 1024.0));
    }
    pts.into_iter().filter_map(|(k, p)| measure::linear_fit(&p).map(|(m, _)| (k, m))).collect()
}

/// An SVG line chart of `metric` over n for each server of one family.
pub fn svg_chart(
    med: &BTreeMap<(Kind, String, usize), RunResult>,
    family: &str,
    title: &str,
    ylabel: &str,
    metric: &dyn Fn(&RunResult) -> f64,
) -> String {
    let (w, h, ml, mr, mt, mb) = (640.0, 360.0, 60.0, 110.0, 30.0, 45.0);
    let series: Vec<(Kind, Vec<(f64, f64)>)> = [Kind::Floor, Kind::Roombox, Kind::Janus]
        .into_iter()
        .map(|k| {
            let pts = med
                .iter()
                .filter(|((kk, f, _), _)| *kk == k && f == family)
                .map(|((_, _, n), r)| (*n as f64, metric(r)))
                .filter(|(_, y)| y.is_finite())
                .collect::<Vec<_>>();
            (k, pts)
        })
        .filter(|(_, p)| !p.is_empty())
        .collect();
    let xs: Vec<f64> = series.iter().flat_map(|(_, p)| p.iter().map(|q| q.0)).collect();
    let ys: Vec<f64> = series.iter().flat_map(|(_, p)| p.iter().map(|q| q.1)).collect();
    let xmax = xs.iter().cloned().fold(1.0, f64::max);
    let xmin = xs.iter().cloned().fold(xmax, f64::min).max(1.0);
    let ymax = ys.iter().cloned().fold(0.0, f64::max) * 1.1 + 1e-9;
    // log2 x axis: 1, 2, 4 … 64
    let lx = |x: f64| {
        let span = (xmax.log2() - xmin.log2()).max(1.0);
        ml + (x.log2() - xmin.log2()) / span * (w - ml - mr)
    };
    let ly = |y: f64| h - mb - y / ymax * (h - mt - mb);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"18\" text-anchor=\"middle\" font-size=\"14\">{title}</text>\n",
        (w - mr + ml) / 2.0
    );
    let _ = writeln!(
        s,
        "<line x1=\"{ml}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>",
        h - mb,
        w - mr,
        h - mb
    );
    let _ = writeln!(s, "<line x1=\"{ml}\" y1=\"{mt}\" x2=\"{ml}\" y2=\"{}\" stroke=\"black\"/>", h - mb);
    let mut x = 1.0;
    while x <= xmax * 1.001 {
        if x >= xmin * 0.999 {
            let px = lx(x);
            let _ = writeln!(
                s,
                "<line x1=\"{px}\" y1=\"{}\" x2=\"{px}\" y2=\"{}\" stroke=\"#ddd\"/><text x=\"{px}\" y=\"{}\" text-anchor=\"middle\">{x}</text>",
                mt,
                h - mb,
                h - mb + 16.0
            );
        }
        x *= 2.0;
    }
    for i in 0..=4 {
        let y = ymax / 1.1 * i as f64 / 4.0;
        let py = ly(y);
        let _ = writeln!(
            s,
            "<line x1=\"{ml}\" y1=\"{py}\" x2=\"{}\" y2=\"{py}\" stroke=\"#eee\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{y:.1}</text>",
            w - mr,
            ml - 6.0,
            py + 4.0
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
        (w - mr + ml) / 2.0,
        h - 8.0,
        if family == "fanout" { "subscribers of one publisher" } else { "participants, all-to-all" }
    );
    let _ = writeln!(
        s,
        "<text transform=\"translate(14,{}) rotate(-90)\" text-anchor=\"middle\">{ylabel}</text>",
        (h - mb + mt) / 2.0
    );
    for (i, (k, pts)) in series.iter().enumerate() {
        let color = match k {
            Kind::Floor => "#2a9d8f",
            Kind::Roombox => "#e76f51",
            Kind::Janus => "#264653",
        };
        let d: Vec<String> = pts.iter().map(|(x, y)| format!("{:.1},{:.1}", lx(*x), ly(*y))).collect();
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
            d.join(" ")
        );
        for (x, y) in pts {
            let _ =
                writeln!(s, "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"/>", lx(*x), ly(*y));
        }
        let ty = mt + 20.0 + i as f64 * 18.0;
        let _ = writeln!(
            s,
            "<line x1=\"{}\" y1=\"{ty}\" x2=\"{}\" y2=\"{ty}\" stroke=\"{color}\" stroke-width=\"3\"/><text x=\"{}\" y=\"{}\">{}</text>",
            w - mr + 10.0,
            w - mr + 30.0,
            w - mr + 35.0,
            ty + 4.0,
            k.name()
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Replace the text between `<!-- bench:NAME:begin -->` and `<!-- bench:NAME:end -->`.
/// Returns false when the markers are missing (the document is left alone).
pub fn replace_section(doc: &str, name: &str, body: &str) -> Option<String> {
    let begin = format!("<!-- bench:{name}:begin -->");
    let end = format!("<!-- bench:{name}:end -->");
    let b = doc.find(&begin)? + begin.len();
    let e = b + doc[b..].find(&end)?;
    Some(format!("{}\n{}\n{}", &doc[..b], body.trim_end(), &doc[e..]))
}

pub fn write_json(path: &Path, v: &impl serde::Serialize) -> anyhow::Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(v)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_marked_section_changes() {
        let doc =
            "# P\nintro\n<!-- bench:t:begin -->\nold\n<!-- bench:t:end -->\n## Media pipeline\nkeep me\n";
        let out = replace_section(doc, "t", "new table").unwrap();
        assert!(
            out.contains("new table")
                && !out.contains("old")
                && out.contains("keep me")
                && out.contains("intro")
        );
        assert_eq!(replace_section(&out, "t", "new table").unwrap(), out, "idempotent");
        assert!(replace_section(doc, "missing", "x").is_none());
    }
}
