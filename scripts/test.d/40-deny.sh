#!/usr/bin/env bash
# cargo deny check: licences, bans (one crypto library, no wildcards), sources,
# and security advisories (deny.toml at the root).
# Advisories need the RustSec database: fetched when the network allows, else
# a copy already on the machine (`cargo deny fetch db` run earlier, or a
# vendored copy: ROOMBOX_ADVISORY_DB names a directory laid out as cargo-deny's
# db-path, i.e. holding the `advisory-db-<hash>` clone that `cargo deny fetch`
# makes under ~/.cargo/advisory-dbs); with neither, that check is
# skipped with a message saying so, and the others still run.
# Cost: installing cargo-deny (cargo install --locked, once per machine) took
# 208 s here; the checks themselves take ~1 s.
set -euo pipefail
cd "$(dirname "$0")/../.."
DENY_VERSION=0.20.2
if ! cargo deny --version 2>/dev/null | grep -q " $DENY_VERSION\$"; then
    echo "==> installing cargo-deny $DENY_VERSION (once per machine)"
    cargo install cargo-deny --version "=$DENY_VERSION" --locked
fi
cargo deny --locked check licenses bans sources

if [ -n "${ROOMBOX_ADVISORY_DB:-}" ]; then
    if [ ! -d "$ROOMBOX_ADVISORY_DB" ]; then
        echo "error: ROOMBOX_ADVISORY_DB=$ROOMBOX_ADVISORY_DB is not a directory" >&2
        exit 1
    fi
    tmpcfg=$(mktemp)
    trap 'rm -f "$tmpcfg"' EXIT
    sed "s|^\[advisories\]|[advisories]\ndb-path = \"$ROOMBOX_ADVISORY_DB\"|" deny.toml > "$tmpcfg"
    cargo deny --locked check --config "$tmpcfg" --disable-fetch advisories
elif cargo deny fetch db >/dev/null 2>&1; then
    cargo deny --locked check advisories
elif compgen -G "${CARGO_HOME:-$HOME/.cargo}/advisory-dbs/advisory-db-*" >/dev/null; then
    echo "==> cargo deny: no network; checking advisories against the database already on this machine"
    cargo deny --locked check --disable-fetch advisories
else
    echo "==> cargo deny: advisories SKIPPED: the RustSec database could not be fetched (offline?)"
    echo "    and none is on this machine. Run 'cargo deny fetch db' when online, or set"
    echo "    ROOMBOX_ADVISORY_DB to a clone of https://github.com/RustSec/advisory-db."
fi
