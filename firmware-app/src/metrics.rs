//! Prometheus metrics: one registry for the whole daemon.
//!
//! * The seed's two metrics, driven by the SFU's [`RoomEvent`]s:
//!   - `active_meetings_total{region,server_id}` — meetings open now. Its value
//!     is a gauge, but the seed's name ends in `_total`, which `promtool check
//!     metrics` refuses on a gauge ("non-counter metrics should not have _total
//!     suffix"). It is therefore exposed as `untyped` (Prometheus stores and
//!     queries untyped series exactly like gauges), and the same value is also
//!     exposed as the lint-clean gauge `roombox_active_meetings`.
//!   - `meeting_participants_duration{region,server_id}` — histogram of how long
//!     participants stayed, in seconds (buckets 60, 300, 900, 1800, 3600, 7200).
//! * SFU counters: sfu-core registers its own in the same registry.
//! * Capture metrics: the media pipeline registers its own.
//! * Process CPU, memory, FDs (`process_*`), and board temperature from
//!   `/sys/class/thermal` when the board has it.
//! * The daemon's own: store errors, logins, HTTP requests.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Mutex;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{MetricFamily, MetricType};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::events::MeetingChange;

/// The seed's histogram buckets, seconds.
pub const DURATION_BUCKETS: [f64; 6] = [60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0];

/// The daemon's metrics.
pub struct Metrics {
    pub registry: Registry,
    region: String,
    server_id: String,
    active_meetings: IntGaugeVec,
    participants_duration: HistogramVec,
    participants: IntGauge,
    open_rooms: Mutex<HashSet<String>>,
    pub logins: IntCounterVec,
    pub store_errors: IntCounterVec,
    pub http_requests: IntCounterVec,
    /// Requests answered 429 by the per-address rate limit, by surface (`api`, `signaling`).
    pub http_rate_limited: IntCounterVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("region", &self.region).field("server_id", &self.server_id).finish()
    }
}

impl Metrics {
    /// Create and register everything. `thermal_root` is `/sys/class/thermal` on a box.
    pub fn new(
        region: &str,
        server_id: &str,
        thermal_root: Option<PathBuf>,
    ) -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let labels = ["region", "server_id"];
        let active_meetings = IntGaugeVec::new(
            Opts::new("roombox_active_meetings", "Meetings open now (rooms with at least one participant)."),
            &labels,
        )?;
        let participants_duration = HistogramVec::new(
            HistogramOpts::new(
                "meeting_participants_duration",
                "How long participants stayed in a meeting, seconds (observed when they leave).",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &labels,
        )?;
        let participants = IntGauge::new(
            "roombox_participants",
            "People in meetings now, all rooms (the room camera not counted).",
        )?;
        let logins = IntCounterVec::new(
            Opts::new("roombox_logins_total", "Login attempts by outcome."),
            &["outcome"],
        )?;
        let store_errors = IntCounterVec::new(
            Opts::new("roombox_store_errors_total", "Store operations that failed, by kind."),
            &["kind"],
        )?;
        let http_requests = IntCounterVec::new(
            Opts::new("roombox_http_requests_total", "HTTP requests answered, by status class."),
            &["class"],
        )?;
        registry.register(Box::new(active_meetings.clone()))?;
        registry.register(Box::new(participants_duration.clone()))?;
        registry.register(Box::new(participants.clone()))?;
        registry.register(Box::new(logins.clone()))?;
        registry.register(Box::new(store_errors.clone()))?;
        registry.register(Box::new(http_requests.clone()))?;
        let http_rate_limited = IntCounterVec::new(
            Opts::new(
                "roombox_http_rate_limited_total",
                "Requests refused (429) by the per-address rate limit, by surface.",
            ),
            &["surface"],
        )?;
        registry.register(Box::new(http_rate_limited.clone()))?;
        for s in ["api", "signaling"] {
            http_rate_limited.with_label_values(&[s]);
        }
        registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
        if let Some(root) = thermal_root
            && root.is_dir()
        {
            registry.register(Box::new(Thermal::new(root)?))?;
        }
        // Series exist (at 0) from the start so dashboards and alerts see them.
        active_meetings.with_label_values(&[region, server_id]).set(0);
        participants_duration.with_label_values(&[region, server_id]);
        for o in ["ok", "bad_credentials", "rate_limited"] {
            logins.with_label_values(&[o]);
        }
        for k in ["full", "closed", "other"] {
            store_errors.with_label_values(&[k]);
        }
        for c in ["2xx", "3xx", "4xx", "5xx"] {
            http_requests.with_label_values(&[c]);
        }
        Ok(Metrics {
            registry,
            region: region.to_owned(),
            server_id: server_id.to_owned(),
            active_meetings,
            participants_duration,
            participants,
            open_rooms: Mutex::new(HashSet::new()),
            logins,
            store_errors,
            http_requests,
            http_rate_limited,
        })
    }

    /// Update from one meeting change (see [`crate::events::Meetings`]). Pure
    /// bookkeeping; no I/O. Local participants (the room camera) are not people.
    pub fn meeting_change(&self, ch: &MeetingChange) {
        let l = [self.region.as_str(), self.server_id.as_str()];
        match ch {
            MeetingChange::Started { room, .. } => {
                if let Ok(mut open) = self.open_rooms.lock() {
                    open.insert(room.clone());
                    self.active_meetings.with_label_values(&l).set(open.len() as i64);
                }
            }
            MeetingChange::Ended { room, .. } => {
                if let Ok(mut open) = self.open_rooms.lock() {
                    open.remove(room);
                    self.active_meetings.with_label_values(&l).set(open.len() as i64);
                }
            }
            MeetingChange::Joined { local: false, .. } => self.participants.inc(),
            MeetingChange::Left { local: false, duration, .. } => {
                self.participants.dec();
                self.participants_duration.with_label_values(&l).observe(duration.as_secs_f64());
            }
            _ => {}
        }
    }

    /// Reset the open-room set from a snapshot (after missed events).
    pub fn resync(&self, rooms: &[String], participants: usize) {
        if let Ok(mut open) = self.open_rooms.lock() {
            *open = rooms.iter().cloned().collect();
            self.active_meetings.with_label_values(&[&self.region, &self.server_id]).set(open.len() as i64);
        }
        self.participants.set(participants as i64);
    }

    pub fn active_meetings(&self) -> i64 {
        self.active_meetings.with_label_values(&[&self.region, &self.server_id]).get()
    }

    /// People in meetings now (`roombox_participants`).
    pub fn people(&self) -> i64 {
        self.participants.get()
    }

    pub fn duration_count(&self) -> u64 {
        self.participants_duration.with_label_values(&[&self.region, &self.server_id]).get_sample_count()
    }

    /// The text exposition: the registry, then the seed's `active_meetings_total`
    /// written by hand as `untyped` (the crate's text encoder cannot write untyped).
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        let mut text = String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))?;
        text.push_str(
            "# HELP active_meetings_total Meetings open now (the seed's name; same value as roombox_active_meetings).\n",
        );
        text.push_str("# TYPE active_meetings_total untyped\n");
        text.push_str(&format!(
            "active_meetings_total{{region=\"{}\",server_id=\"{}\"}} {}\n",
            escape_label(&self.region),
            escape_label(&self.server_id),
            self.active_meetings()
        ));
        Ok(text)
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Board temperature from the kernel's thermal zones, read at scrape time.
struct Thermal {
    root: PathBuf,
    desc: Desc,
}

impl Thermal {
    fn new(root: PathBuf) -> Result<Self, prometheus::Error> {
        let desc = Desc::new(
            "roombox_board_temperature_celsius".into(),
            "Temperature of each thermal zone of the board (from /sys/class/thermal).".into(),
            vec!["zone".into(), "type".into()],
            Default::default(),
        )?;
        Ok(Thermal { root, desc })
    }

    /// `(zone, type, celsius)` for every readable zone.
    fn read(&self) -> Vec<(String, String, f64)> {
        let mut out = Vec::new();
        let Ok(dir) = std::fs::read_dir(&self.root) else { return out };
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("thermal_zone") {
                continue;
            }
            let p = e.path();
            let Some(milli) =
                std::fs::read_to_string(p.join("temp")).ok().and_then(|s| s.trim().parse::<f64>().ok())
            else {
                continue;
            };
            let ty = std::fs::read_to_string(p.join("type")).map(|s| s.trim().to_owned()).unwrap_or_default();
            out.push((name, ty, milli / 1000.0));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

impl Collector for Thermal {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let readings = self.read();
        if readings.is_empty() {
            return Vec::new();
        }
        let mut fam = MetricFamily::default();
        fam.set_name(self.desc.fq_name.clone());
        fam.set_help(self.desc.help.clone());
        fam.set_field_type(MetricType::GAUGE);
        for (zone, ty, c) in readings {
            let mut m = prometheus::proto::Metric::default();
            let mut l1 = prometheus::proto::LabelPair::default();
            l1.set_name("type".into());
            l1.set_value(ty);
            let mut l2 = prometheus::proto::LabelPair::default();
            l2.set_name("zone".into());
            l2.set_value(zone);
            m.set_label(vec![l1, l2]);
            let mut gauge = prometheus::proto::Gauge::default();
            gauge.set_value(c);
            m.set_gauge(gauge);
            fam.mut_metric().push(m);
        }
        vec![fam]
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    fn joined(room: &str, id: &str, s: u64) -> MeetingChange {
        MeetingChange::Joined {
            room: room.into(),
            identity: id.into(),
            session: s,
            local: false,
            at: SystemTime::UNIX_EPOCH,
        }
    }

    fn left(room: &str, s: u64, secs: u64) -> MeetingChange {
        MeetingChange::Left {
            room: room.into(),
            session: s,
            local: false,
            reason: sfu_core::LeaveReason::Left,
            duration: Duration::from_secs(secs),
            at: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn the_seed_metrics_move_with_meetings() {
        let m = Metrics::new("hq", "box-1", None).unwrap();
        let t = SystemTime::UNIX_EPOCH;
        m.meeting_change(&MeetingChange::Started { room: "a".into(), at: t });
        m.meeting_change(&joined("a", "alice", 1));
        m.meeting_change(&MeetingChange::Joined {
            room: "a".into(),
            identity: "room".into(),
            session: 9,
            local: true,
            at: t,
        });
        m.meeting_change(&MeetingChange::Started { room: "b".into(), at: t });
        m.meeting_change(&MeetingChange::Started { room: "b".into(), at: t });
        assert_eq!(m.active_meetings(), 2, "a repeated start counts once");
        assert_eq!(m.participants.get(), 1, "the room camera is not a person");
        m.meeting_change(&left("a", 1, 400));
        m.meeting_change(&MeetingChange::Ended { room: "a".into(), at: t });
        assert_eq!(m.active_meetings(), 1);
        assert_eq!(m.duration_count(), 1);
        let text = m.render().unwrap();
        assert!(text.contains("active_meetings_total{region=\"hq\",server_id=\"box-1\"} 1"), "{text}");
        assert!(text.contains("# TYPE active_meetings_total untyped"), "{text}");
        assert!(text.contains(
            "meeting_participants_duration_bucket{region=\"hq\",server_id=\"box-1\",le=\"300\"} 0"
        ));
        assert!(text.contains(
            "meeting_participants_duration_bucket{region=\"hq\",server_id=\"box-1\",le=\"900\"} 1"
        ));
        assert!(text.contains("meeting_participants_duration_sum{region=\"hq\",server_id=\"box-1\"} 400"));
        assert!(text.contains("process_resident_memory_bytes"), "process metrics present");
    }

    #[test]
    fn board_temperature_comes_from_thermal_zones() {
        let d = tempfile::tempdir().unwrap();
        let z = d.path().join("thermal_zone0");
        std::fs::create_dir(&z).unwrap();
        std::fs::write(z.join("temp"), "48312\n").unwrap();
        std::fs::write(z.join("type"), "cpu-thermal\n").unwrap();
        std::fs::create_dir(d.path().join("cooling_device0")).unwrap();
        let m = Metrics::new("hq", "box", Some(d.path().to_owned())).unwrap();
        let text = m.render().unwrap();
        assert!(
            text.contains(
                "roombox_board_temperature_celsius{type=\"cpu-thermal\",zone=\"thermal_zone0\"} 48.312"
            ),
            "{text}"
        );
    }
}
