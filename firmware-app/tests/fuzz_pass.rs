//! Every fuzz target, bounded, on stable, inside `cargo test`: CI's form of
//! `fuzz/` (libFuzzer needs nightly and a ~36 min instrumented build, so
//! `scripts/test.d/60-fuzz.sh` runs it only when asked).
//!
//! Each target in `fuzz/fuzz_targets/` is one call into a harness in its
//! crate (`sfu_core::fuzzing`, `cloud_bridge::fuzzing`, `recorder::fuzzing`,
//! `roombox::config::fuzz_check`); this file calls the same functions. For
//! every target it replays the committed seeds (`fuzz/seeds/<target>`), then
//! runs a deterministic mutation pass over them: bit flips, random and
//! "interesting" bytes, small arithmetic, byte inserts and deletes, copied
//! ranges, splices and cross-overs between seeds, up to four stacked per
//! input, half of them on an earlier mutant. No coverage feedback (that is
//! what libFuzzer adds), but seeds that already reach deep (a valid offer, a
//! signed token, a DTLS flight) make the mutants reach the same code.
//!
//! The pass is reproducible: the PRNG is seeded from the target's name (or
//! `ROOMBOX_FUZZ_PASS_SEED`), and a panicking input is written to
//! `$CARGO_TARGET_TMPDIR/fuzz_pass/<target>-<iteration>` to replay with
//! `cargo +nightly fuzz run <target> <file>` or by a unit test.
//! `ROOMBOX_FUZZ_PASS_SCALE=10` runs ten times the iterations (a longer local
//! run); the default budget is ~30 s for the whole file on the 2-core dev box.
//! `every_fuzz_target_has_a_pass` fails when a target is added without a pass.

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::Instant;

struct Target {
    name: &'static str,
    /// The harness's path, as the target file must call it.
    harness: &'static str,
    run: fn(&[u8]),
    /// Mutants per pass at scale 1 (after the seeds).
    iterations: u64,
    /// Mutants grow no longer than this.
    max_len: usize,
}

macro_rules! targets {
    ($($name:ident => $($seg:ident)::+, $iterations:expr, $max_len:expr;)*) => {
        const TARGETS: &[Target] = &[$(Target {
            name: stringify!($name),
            harness: concat!($(stringify!($seg), "::"),+),
            run: $($seg)::+,
            iterations: $iterations,
            max_len: $max_len,
        },)*];
        $(mod $name {
            #[test]
            fn survives_its_seeds_and_a_mutation_pass() {
                super::pass(stringify!($name));
            }
        })*
    };
}

// Iterations are sized so each target takes ~4-5 s in a debug test build on
// the shared 2-core box, ~30 s for the file with the test harness's two
// threads (the engine targets build a str0m session per input, so they get
// thousands where the parsers get hundreds of thousands).
targets! {
    signaling_json => sfu_core::fuzzing::signaling_json, 1_500_000, 512;
    sdp_offer => sfu_core::fuzzing::sdp_offer, 15_000, 8192;
    rtp_payload => sfu_core::fuzzing::rtp_payload, 2_000_000, 512;
    datagram => sfu_core::fuzzing::datagram, 8_000, 4096;
    local_rtp => sfu_core::fuzzing::local_rtp, 45_000, 2048;
    room_ws => sfu_core::fuzzing::room_ws, 25_000, 4096;
    jwt_claims => sfu_core::fuzzing::jwt, 600_000, 2048;
    daemon_config => roombox::config::fuzz_check, 80_000, 4096;
    fleet_command => cloud_bridge::fuzzing::fleet_command, 250_000, 1024;
    fleet_desired => cloud_bridge::fuzzing::fleet_desired, 400_000, 2048;
    s3_xml => cloud_bridge::fuzzing::s3_xml, 250_000, 2048;
    recovery => recorder::fuzzing::recovery, 70_000, 4096;
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn seeds(name: &str) -> Vec<Vec<u8>> {
    let dir = fuzz_dir().join("seeds").join(name);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|f| f.expect("a directory entry").path())
        .collect();
    paths.sort();
    paths.iter().map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).collect()
}

/// splitmix64: small, fast, and the same sequence on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// Bytes that parsers branch on: boundaries, separators, quotes, digits.
const INTERESTING: &[u8] = b"\x00\x01\x7f\x80\xff\n\r\t \"'\\{}[]<>:;,=&#-.0129aAzZ";

/// One to four stacked mutations of `data`; `pool` is where splices and
/// cross-overs take their bytes from.
fn mutate(rng: &mut Rng, data: &mut Vec<u8>, pool: &[Vec<u8>], max_len: usize) {
    for _ in 0..1 + rng.below(4) {
        let len = data.len();
        match rng.below(10) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                data[i] = rng.byte();
            }
            2 if len > 0 => {
                let i = rng.below(len);
                data[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            3 if len > 0 => {
                // small arithmetic, as on a length or a counter field
                let i = rng.below(len);
                let d = rng.below(35) as u8;
                data[i] =
                    if rng.below(2) == 0 { data[i].wrapping_add(d + 1) } else { data[i].wrapping_sub(d + 1) };
            }
            4 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n)
                    .map(|_| {
                        if rng.below(2) == 0 { rng.byte() } else { INTERESTING[rng.below(INTERESTING.len())] }
                    })
                    .collect();
                data.splice(at..at, bytes);
            }
            5 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(64));
                data.drain(at..at + n);
            }
            6 if len > 0 => {
                // a range copied elsewhere in the input (repeated fields, longer lists)
                let from = rng.below(len);
                let n = 1 + rng.below((len - from).min(128));
                let chunk = data[from..from + n].to_vec();
                let at = rng.below(len + 1);
                data.splice(at..at, chunk);
            }
            7 if !pool.is_empty() => {
                // splice: our head, another input's tail
                let other = &pool[rng.below(pool.len())];
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            8 if !pool.is_empty() => {
                // cross-over: a range of another input inserted or overwritten here
                let other = &pool[rng.below(pool.len())];
                if !other.is_empty() {
                    let from = rng.below(other.len());
                    let n = 1 + rng.below((other.len() - from).min(256));
                    let at = rng.below(len + 1);
                    if rng.below(2) == 0 {
                        data.splice(at..at, other[from..from + n].iter().copied());
                    } else {
                        let end = (at + n).min(len);
                        data.splice(at..end, other[from..from + n].iter().copied());
                    }
                }
            }
            _ => {
                // truncate: a cut-off read
                if len > 0 {
                    data.truncate(rng.below(len));
                }
            }
        }
    }
    data.truncate(max_len);
}

fn env_f64(name: &str, default: f64) -> f64 {
    match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|_| panic!("{name}={v} is not a number")),
        Err(_) => default,
    }
}

/// FNV-1a of the target's name: each target its own fixed PRNG stream.
fn name_seed(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Runs `input` through the harness; a panic saves the input and fails the test with how to replay it.
fn run_one(t: &Target, input: &[u8], what: &str) {
    if catch_unwind(AssertUnwindSafe(|| (t.run)(input))).is_err() {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz_pass");
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join(format!("{}-{}", t.name, what.replace(' ', "-")));
        let saved = std::fs::write(&file, input).is_ok();
        panic!(
            "fuzz target {} panicked on {what} ({} bytes{}); replay: cd fuzz && cargo +nightly fuzz run {} {}",
            t.name,
            input.len(),
            if saved { format!(", saved to {}", file.display()) } else { String::new() },
            t.name,
            file.display()
        );
    }
}

fn pass(name: &str) {
    let t = TARGETS.iter().find(|t| t.name == name).expect("a listed target");
    let seeds = seeds(name);
    assert!(!seeds.is_empty(), "fuzz/seeds/{name} has no seeds");
    let start = Instant::now();
    for (i, s) in seeds.iter().enumerate() {
        run_one(t, s, &format!("seed {i}"));
    }
    let seed = match std::env::var("ROOMBOX_FUZZ_PASS_SEED") {
        Ok(v) => v.parse::<u64>().expect("ROOMBOX_FUZZ_PASS_SEED is a number") ^ name_seed(name),
        Err(_) => name_seed(name),
    };
    let iterations = (t.iterations as f64 * env_f64("ROOMBOX_FUZZ_PASS_SCALE", 1.0)).round() as u64;
    let mut rng = Rng(seed);
    // seeds first, then up to 32 recent mutants, so mutations stack over generations
    let mut pool: Vec<Vec<u8>> = seeds.clone();
    let mut recent = 0;
    for i in 0..iterations {
        let base = if pool.len() > seeds.len() && rng.below(2) == 0 {
            seeds.len() + rng.below(pool.len() - seeds.len())
        } else {
            rng.below(seeds.len())
        };
        let mut input = pool[base].clone();
        mutate(&mut rng, &mut input, &pool, t.max_len);
        run_one(t, &input, &format!("iteration {i} seed {seed}"));
        if pool.len() < seeds.len() + 32 {
            pool.push(input);
        } else {
            pool[seeds.len() + recent] = input;
            recent = (recent + 1) % 32;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "fuzz pass {name}: {} seeds + {iterations} mutants in {secs:.2} s ({:.0} exec/s), clean",
        seeds.len(),
        (seeds.len() as u64 + iterations) as f64 / secs.max(1e-9)
    );
}

/// A target added to `fuzz/` without a pass here (or one whose file no
/// longer calls the harness this pass runs) fails this test.
#[test]
fn every_fuzz_target_has_a_pass() {
    let dir = fuzz_dir().join("fuzz_targets");
    let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|f| f.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .map(|p| p.file_stem().expect("a file name").to_string_lossy().into_owned())
        .collect();
    let passed: BTreeSet<String> = TARGETS.iter().map(|t| t.name.to_string()).collect();
    assert_eq!(on_disk, passed, "every fuzz target needs a pass in this file, and every pass a target");
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz/Cargo.toml");
    for t in TARGETS {
        let src = std::fs::read_to_string(dir.join(format!("{}.rs", t.name))).expect("the target file");
        let harness = t.harness.trim_end_matches("::");
        let call = format!("fuzz_target!(|data: &[u8]| {harness}(data));");
        assert!(
            src.contains(&call),
            "fuzz_targets/{}.rs must be `{call}` so this pass runs what it runs",
            t.name
        );
        assert!(
            manifest.contains(&format!("path = \"fuzz_targets/{}.rs\"", t.name)),
            "no [[bin]] for {}",
            t.name
        );
        assert!(!seeds(t.name).is_empty(), "fuzz/seeds/{} has no seeds", t.name);
    }
}

/// The mutator is deterministic and actually changes inputs.
#[test]
fn the_mutator_is_deterministic_and_mutates() {
    let pool = vec![b"{\"type\":\"join\"}".to_vec(), vec![0x90, 0xe0, 0x80, 0x01]];
    let run = || {
        let mut rng = Rng(7);
        (0..200)
            .map(|i| {
                let mut d = pool[i % 2].clone();
                mutate(&mut rng, &mut d, &pool, 64);
                d
            })
            .collect::<Vec<_>>()
    };
    let a = run();
    assert_eq!(a, run());
    let changed = a.iter().enumerate().filter(|(i, d)| **d != pool[i % 2]).count();
    assert!(changed > 180, "only {changed} of 200 mutants differ from their base");
    assert!(a.iter().all(|d| d.len() <= 64));
}

/// `ROOMBOX_FUZZ_REPLAY=<target>:<file> cargo test -p firmware-app --test fuzz_pass replay`
/// runs one saved input (a crash this pass or libFuzzer found) through its
/// target's harness; without the variable it does nothing.
#[test]
fn replay() {
    let Ok(spec) = std::env::var("ROOMBOX_FUZZ_REPLAY") else { return };
    let (name, file) = spec.split_once(':').expect("ROOMBOX_FUZZ_REPLAY=<target>:<file>");
    let t = TARGETS.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("no target {name}"));
    let data = std::fs::read(file).unwrap_or_else(|e| panic!("{file}: {e}"));
    (t.run)(&data);
}
