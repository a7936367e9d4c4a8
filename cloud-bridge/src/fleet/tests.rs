//! The core, driven without a broker: events in, actions out, time as a number.

use super::command::{CommandClaims, Signer, generate_authority_key};
use super::*;
use crate::AuthorityAlgorithm;

const NOW: u64 = 1_800_000_000;

struct Fixture {
    signer: Signer,
    link: FleetLink,
}

fn fixture(records: Vec<CommandRecord>) -> (Fixture, Vec<Action>) {
    let (private, public) = generate_authority_key(AuthorityAlgorithm::EdDSA).unwrap();
    let verifier = Verifier::new(public.as_bytes(), AuthorityAlgorithm::EdDSA, "box-1", 3600).unwrap();
    let settings = LinkSettings { device_id: "box-1".into(), offline_buffer: 8 };
    let (link, initial) = FleetLink::new(settings, verifier, records, None, NOW);
    (Fixture { signer: Signer::new(private.as_bytes(), AuthorityAlgorithm::EdDSA).unwrap(), link }, initial)
}

fn token(f: &Fixture, id: &str, name: &str) -> String {
    f.signer
        .sign(&CommandClaims {
            aud: "box-1".into(),
            sub: None,
            jti: id.into(),
            name: name.into(),
            args: serde_json::json!({"mic": true}),
            exp: NOW + 60,
            iat: Some(NOW),
            iss: None,
        })
        .unwrap()
}

fn publishes(a: &[Action]) -> Vec<&Publish> {
    a.iter()
        .filter_map(|a| match a {
            Action::Publish(p) => Some(p),
            _ => None,
        })
        .collect()
}

fn runs(a: &[Action]) -> Vec<&Command> {
    a.iter()
        .filter_map(|a| match a {
            Action::Run(c) => Some(c),
            _ => None,
        })
        .collect()
}

fn connected() -> (Fixture, Vec<Action>) {
    let (mut f, _) = fixture(Vec::new());
    let a = f.link.handle(Event::Connected, NOW);
    (f, a)
}

#[test]
fn connecting_subscribes_and_says_online() {
    let (_, a) = connected();
    assert_eq!(
        a[0],
        Action::Subscribe(vec![
            "roombox/box-1/cmd/+".into(),
            "roombox/box-1/cmd/+/ack".into(),
            "roombox/box-1/config/desired".into()
        ])
    );
    let p = publishes(&a);
    assert_eq!(
        (p[0].topic.as_str(), p[0].payload.as_slice(), p[0].retain),
        ("roombox/box-1/status", &b"online"[..], true)
    );
}

#[test]
fn a_command_delivered_twice_runs_once_and_says_the_same_result_twice() {
    let (mut f, _) = connected();
    let t = token(&f, "c-1", "mute");
    let a = f.link.handle(Event::Message { topic: "roombox/box-1/cmd/mute", payload: t.as_bytes() }, NOW);
    assert!(
        matches!(&a[0], Action::Persist(r) if r.id == "c-1" && r.result.is_none()),
        "persisted before it runs: {a:?}"
    );
    assert_eq!(runs(&a).len(), 1);
    assert_eq!(runs(&a)[0].args, serde_json::json!({"mic": true}));
    // Delivered again while it runs: nothing.
    let again =
        f.link.handle(Event::Message { topic: "roombox/box-1/cmd/mute", payload: t.as_bytes() }, NOW + 1);
    assert!(again.is_empty(), "{again:?}");
    let done = f.link.command_finished("c-1", true, "muted".into(), NOW + 2);
    let first = publishes(&done)[0].clone();
    assert_eq!(first.topic, "roombox/box-1/cmd/mute/result");
    assert!(first.retain);
    // Delivered a third time after it finished: not run; the same result bytes again.
    let third =
        f.link.handle(Event::Message { topic: "roombox/box-1/cmd/mute", payload: t.as_bytes() }, NOW + 3);
    assert!(runs(&third).is_empty());
    assert_eq!(publishes(&third)[0].payload, first.payload);
    let r: CommandResult = serde_json::from_slice(&first.payload).unwrap();
    assert_eq!((r.id.as_str(), r.ok, r.message.as_str()), ("c-1", true, "muted"));
}

#[test]
fn the_same_id_with_another_token_is_a_replay() {
    let (mut f, _) = connected();
    let t = token(&f, "c-1", "mute");
    f.link.handle(Event::Message { topic: "roombox/box-1/cmd/mute", payload: t.as_bytes() }, NOW);
    let t2 = token(&f, "c-1", "reboot");
    let a = f.link.handle(Event::Message { topic: "roombox/box-1/cmd/reboot", payload: t2.as_bytes() }, NOW);
    assert!(runs(&a).is_empty());
    let p = publishes(&a);
    assert_eq!(p[0].topic, "roombox/box-1/refused");
    let r: RefusalReport = serde_json::from_slice(&p[0].payload).unwrap();
    assert_eq!((r.reason, r.id.as_deref()), (Refusal::ReplayedId, Some("c-1")));
    assert_eq!(f.link.stats().refused["replayed_id"], 1);
}

#[test]
fn refused_commands_are_reported_and_counted_by_reason() {
    let (mut f, _) = connected();
    for payload in [&b"hello"[..], b"", b"a.b.c"] {
        let a = f.link.handle(Event::Message { topic: "roombox/box-1/cmd/mute", payload }, NOW);
        assert!(runs(&a).is_empty());
        let r: RefusalReport = serde_json::from_slice(&publishes(&a)[0].payload).unwrap();
        assert_eq!((r.name.as_str(), r.reason), ("mute", Refusal::Unsigned));
    }
    assert_eq!(f.link.stats().refused["unsigned"], 3);
    assert_eq!(f.link.stats().messages_in, 3);
}

#[test]
fn an_ack_clears_the_retained_result_and_is_persisted() {
    let (mut f, _) = connected();
    let t = token(&f, "c-1", "mute");
    f.link.handle(Event::Message { topic: "roombox/box-1/cmd/mute", payload: t.as_bytes() }, NOW);
    f.link.command_finished("c-1", true, "muted".into(), NOW);
    let a = f.link.handle(Event::Message { topic: "roombox/box-1/cmd/mute/ack", payload: b"c-1" }, NOW);
    assert!(matches!(&a[0], Action::Persist(r) if r.acked));
    let p = publishes(&a);
    assert_eq!(
        (p[0].topic.as_str(), p[0].payload.len(), p[0].retain),
        ("roombox/box-1/cmd/mute/result", 0, true)
    );
    // Acks for unknown ids or the wrong name change nothing.
    assert!(
        f.link
            .handle(Event::Message { topic: "roombox/box-1/cmd/mute/ack", payload: b"nope" }, NOW)
            .is_empty()
    );
    assert!(
        f.link
            .handle(Event::Message { topic: "roombox/box-1/cmd/reboot/ack", payload: b"c-1" }, NOW)
            .is_empty()
    );
    // Past its expiry, an acked record is forgotten.
    assert_eq!(f.link.prune(NOW + 61), vec![Action::Forget("c-1".into())]);
}

#[test]
fn offline_results_are_buffered_and_telemetry_is_dropped_first() {
    let (mut f, _) = connected();
    let t = token(&f, "c-1", "mute");
    f.link.handle(Event::Message { topic: "roombox/box-1/cmd/mute", payload: t.as_bytes() }, NOW);
    f.link.handle(Event::Disconnected, NOW);
    for i in 0..20u8 {
        assert!(f.link.telemetry(vec![i]).is_empty(), "nothing is sent while offline");
    }
    assert!(
        f.link
            .command_finished("c-1", true, "muted".into(), NOW)
            .iter()
            .all(|a| !matches!(a, Action::Publish(_)))
    );
    for i in 0..20u8 {
        f.link.telemetry(vec![100 + i]);
    }
    let st = f.link.stats();
    assert_eq!(st.buffered, 8);
    assert!(st.telemetry_dropped >= 12);
    let a = f.link.handle(Event::Connected, NOW + 30);
    let p = publishes(&a);
    let results: Vec<_> = p.iter().filter(|p| p.kind == Kind::Result).collect();
    assert_eq!(results.len(), 1, "the result survived, once");
    let tel: Vec<u8> = p.iter().filter(|p| p.kind == Kind::Telemetry).map(|p| p.payload[0]).collect();
    assert_eq!(tel, (113..120).collect::<Vec<u8>>(), "the newest telemetry survived");
    assert_eq!(f.link.stats().reconnects, 1);
}

#[test]
fn results_are_never_dropped_even_past_the_bound() {
    let (mut f, _) = connected();
    let ids: Vec<String> = (0..20).map(|i| format!("c-{i}")).collect();
    for id in &ids {
        let t = token(&f, id, "mute");
        f.link.handle(Event::Message { topic: "roombox/box-1/cmd/mute", payload: t.as_bytes() }, NOW);
    }
    f.link.handle(Event::Disconnected, NOW);
    for id in &ids {
        f.link.command_finished(id, true, "ok".into(), NOW);
    }
    let a = f.link.handle(Event::Connected, NOW);
    assert_eq!(publishes(&a).iter().filter(|p| p.kind == Kind::Result).count(), 20);
}

#[test]
fn state_is_published_only_when_it_changes_and_again_on_reconnect() {
    let (mut f, _) = connected();
    assert_eq!(publishes(&f.link.state(b"{\"a\":1}".to_vec())).len(), 1);
    assert!(f.link.state(b"{\"a\":1}".to_vec()).is_empty());
    f.link.handle(Event::Disconnected, NOW);
    f.link.state(b"{\"a\":2}".to_vec());
    f.link.state(b"{\"a\":3}".to_vec());
    let a = f.link.handle(Event::Connected, NOW);
    let states: Vec<_> = publishes(&a).into_iter().filter(|p| p.kind == Kind::State).collect();
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].payload, b"{\"a\":3}");
}

#[test]
fn a_command_left_running_by_a_restart_is_reported_interrupted_not_rerun() {
    let rec = CommandRecord {
        id: "c-9".into(),
        name: "install_update".into(),
        expires_at: NOW + 60,
        token_sha256: "x".into(),
        result: None,
        acked: false,
    };
    let (mut f, initial) = fixture(vec![rec]);
    assert!(matches!(&initial[0], Action::Persist(r) if r.result.as_ref().is_some_and(|r| !r.ok)));
    let a = f.link.handle(Event::Connected, NOW);
    let r: CommandResult =
        serde_json::from_slice(&publishes(&a).iter().find(|p| p.kind == Kind::Result).unwrap().payload)
            .unwrap();
    assert!(r.message.contains("interrupted"), "{}", r.message);
}

#[test]
fn desired_config_is_applied_once_per_version_and_bad_envelopes_are_reported() {
    let (mut f, _) = connected();
    let d = br#"{"version":"v1","config":"room = \"a\"\n"}"#;
    let a = f.link.handle(Event::Message { topic: "roombox/box-1/config/desired", payload: d }, NOW);
    assert!(matches!(&a[0], Action::ApplyConfig(c) if c.version == "v1"));
    assert!(
        f.link.handle(Event::Message { topic: "roombox/box-1/config/desired", payload: d }, NOW).is_empty()
    );
    let report =
        ConfigReport { version: Some("v1".into()), status: ConfigStatus::Applied, problems: vec![], at: NOW };
    let a = f.link.config_outcome(report.clone());
    assert_eq!(publishes(&a)[0].topic, "roombox/box-1/config/reported");
    assert_eq!(f.link.stats().config_version.as_deref(), Some("v1"));
    // Re-delivered after a reconnect: not applied again.
    assert!(
        f.link.handle(Event::Message { topic: "roombox/box-1/config/desired", payload: d }, NOW).is_empty()
    );
    let a = f.link.handle(Event::Message { topic: "roombox/box-1/config/desired", payload: b"{" }, NOW);
    let r: ConfigReport = serde_json::from_slice(&publishes(&a)[0].payload).unwrap();
    assert_eq!(r.status, ConfigStatus::Rejected);
    assert!(r.problems[0].starts_with("payload:"), "{:?}", r.problems);
    // A cleared retained message is not a config.
    assert!(
        f.link.handle(Event::Message { topic: "roombox/box-1/config/desired", payload: b"" }, NOW).is_empty()
    );
}

#[test]
fn a_restart_apply_reports_applying_then_its_outcome_and_counts_each() {
    let (mut f, _) = connected();
    let d = br#"{"version":"v2","config":"room = \"a\"\n"}"#;
    f.link.handle(Event::Message { topic: "roombox/box-1/config/desired", payload: d }, NOW);
    let applying = ConfigReport {
        version: Some("v2".into()),
        status: ConfigStatus::Applying,
        problems: vec![],
        at: NOW,
    };
    let a = f.link.config_outcome(applying);
    let r: ConfigReport = serde_json::from_slice(&publishes(&a)[0].payload).unwrap();
    assert_eq!(r.status, ConfigStatus::Applying);
    assert!(publishes(&a)[0].retain);
    assert_eq!(f.link.stats().config_version, None, "not in use until the restarted daemon says so");
    // The restarted daemon's outcome, handed to its link at start.
    let rolled = ConfigReport {
        version: Some("v2".into()),
        status: ConfigStatus::RolledBack,
        problems: vec!["port held".into()],
        at: NOW + 5,
    };
    let a = f.link.config_outcome(rolled);
    let r: ConfigReport = serde_json::from_slice(&publishes(&a)[0].payload).unwrap();
    assert_eq!((r.status, r.problems), (ConfigStatus::RolledBack, vec!["port held".to_string()]));
    let counts = f.link.stats().config_reports;
    assert_eq!((counts["applying"], counts["rolled_back"]), (1, 1));
    // The retained desired config is not tried again.
    assert!(
        f.link.handle(Event::Message { topic: "roombox/box-1/config/desired", payload: d }, NOW).is_empty()
    );
}

#[test]
fn other_topics_are_ignored() {
    let (mut f, _) = connected();
    for t in [
        "roombox/box-2/cmd/mute",
        "roombox/box-1/cmd/",
        "roombox/box-1/cmd/a/b/c",
        "roombox/box-1x/cmd/mute",
        "x",
    ] {
        assert!(f.link.handle(Event::Message { topic: t, payload: b"x" }, NOW).is_empty(), "{t}");
    }
}

#[test]
fn mutated_tokens_never_run() {
    // What the fleet_command fuzz target checks, on a fixed pseudo-random sample (CI runs no fuzzer).
    let (mut f, _) = connected();
    let good = token(&f, "c-1", "mute").into_bytes();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..3000 {
        let mut t = good.clone();
        for _ in 0..=(next() % 3) {
            let i = (next() as usize) % t.len();
            match next() % 3 {
                0 => t[i] ^= 1 << (next() % 8),
                1 => {
                    t.remove(i);
                }
                _ => t.insert(i, b"A.-_=/{}"[(next() % 8) as usize]),
            }
        }
        if t == good {
            continue;
        }
        let a = f.link.handle(Event::Message { topic: "roombox/box-1/cmd/mute", payload: &t }, NOW);
        assert!(runs(&a).is_empty(), "a mutated token ran: {:?}", String::from_utf8_lossy(&t));
    }
    assert_eq!(f.link.stats().commands_run, 0);
}
