#!/usr/bin/env bash
# Extra step of scripts/test: roomboxd for 64-bit ARM boards, built here and tested under qemu-user.
#   1. scripts/cross-aarch64 setup: rustup target, cross gcc/g++, qemu-user-static, and
#      libasound2-dev:arm64 (adds the arm64 dpkg architecture first); idempotent.
#   2. roomboxd cross-built; its stripped size printed.
#   3. the unit tests (--lib --bins) of the crates that run on a board -- sfu-core, firmware-app,
#      cloud-bridge, compositor (its pixel tests through fast_image_resize's aarch64/NEON build;
#      it brings criterion, its bench's dev-dependency, into the cross build: 41 s for the crate
#      and its dependencies, measured) and tests/vm's probe (its openh264/Opus round trips) -- built for aarch64 and
#      run by qemu-aarch64-static. bench and the tests/ harness crate run on the host only
#      (emulated timings mean nothing; the harness drives x86 Chromium), and leaving them out
#      keeps their dev-dependencies (criterion, ...) out of the cross build.
#
# Profile: CI builds roomboxd with the `dev` profile (AARCH64_CI_PROFILE, default dev): it shares
# every dependency with the unit tests' build, so the step compiles the dependency tree for aarch64
# once. The shipped binary is the `image` profile's (LTO, one codegen unit, opt-level s: a cold
# build of that alone took 13.7 min here), which `scripts/cross-aarch64 build` makes and
# docs/boards.md records; set AARCH64_CI_PROFILE=image to have CI build and size that one instead.
#
# Dependencies at -O0 (AARCH64_DEPS_OPT_LEVEL, default 0 here; Cargo.toml's dev profile has -O2),
# except the C libraries and str0m's DTLS/SCTP stack, which the tests lean on (the list is in
# scripts/cross-aarch64): under emulation the tests check behaviour, and the optimiser's time on
# ~300 crates was most of the step (cross build 594 s -> 443 s cold, docs/boards.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
export AARCH64_DEPS_OPT_LEVEL=${AARCH64_DEPS_OPT_LEVEL-0}
start=$SECONDS
scripts/cross-aarch64 setup
t=$SECONDS
scripts/cross-aarch64 build "${AARCH64_CI_PROFILE:-dev}"
build_s=$((SECONDS - t)); t=$SECONDS
scripts/cross-aarch64 test -p sfu-core -p firmware-app -p cloud-bridge -p compositor -p roombox-vm-probe --lib --bins
test_s=$((SECONDS - t))
echo "==> 20-aarch64: passed in $((SECONDS - start)) s (build ${build_s} s, unit tests under qemu ${test_s} s)"
