#!/usr/bin/env bash
# Extra step of scripts/test: the capture code against real kernel drivers, in a VM.
# Boots Debian's x86_64 kernel under qemu (TCG; KVM does not work here) with vivid, snd-dummy and
# snd-aloop, and runs tests/vm's probe: frames from vivid and samples through snd-aloop go through
# the daemon's media pipeline (capture, H.264/Opus encode, decode) with counts and content checked.
# Needs root (apt, the first time) and about one core for a few minutes; see docs/boards.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$SECONDS
scripts/vm-test setup x86_64   # idempotent: installs only what is missing
# The probe binary: `cargo test --workspace`, which scripts/test runs before this step, built it
# (tests/vm/tests/host.rs runs it). `cargo build -p roombox-vm-probe` would resolve features without
# the workspace's dev-dependencies and rebuild tokio, serde and everything above them: minutes.
# Run on its own before any `cargo test`, the step builds the probe itself.
probe=${CARGO_TARGET_DIR:-target}/debug/vm-probe
if [[ -x $probe ]]; then
    VM_PROBE=$probe scripts/vm-test run x86_64
else
    scripts/vm-test run x86_64
fi
echo "==> 30-vm: VM test passed in $((SECONDS - start)) s"
