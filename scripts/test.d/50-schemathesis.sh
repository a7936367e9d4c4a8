#!/usr/bin/env bash
# schemathesis (PyPI) against roomboxd's own OpenAPI document, served at
# /api/v1/openapi.json, with a valid admin token: every schemathesis check
# (no 5xx; status codes, content types, headers and bodies as documented;
# schema-valid requests accepted, schema-violating ones refused; auth not
# ignored), a bounded number of
# examples per operation (ROOMBOX_SCHEMATHESIS_EXAMPLES, default 20) and a
# fixed seed, so a run is reproducible. The daemon runs over plain HTTP on
# loopback with the per-address and login rate limits lifted (schemathesis is
# one address sending thousands of requests; the limits have tests of their own).
# `POST /users/{username}/revoke` may revoke the admin's own token, so it runs
# last, on its own. Measured here: 13-15 s with roomboxd built and the venv
# made; 42 s from nothing (venv, pip download of schemathesis, run).
set -euo pipefail
cd "$(dirname "$0")/../.."
SCHEMATHESIS_VERSION=4.32.5
EXAMPLES="${ROOMBOX_SCHEMATHESIS_EXAMPLES:-20}"
target="${CARGO_TARGET_DIR:-target}"
work=$(mktemp -d)
pid=""
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

venv="${ROOMBOX_SCHEMATHESIS_VENV:-$target/schemathesis-venv}"
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
    echo "==> installing schemathesis $SCHEMATHESIS_VERSION into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "schemathesis==$SCHEMATHESIS_VERSION"
fi

cargo build --locked -q -p firmware-app --bin roomboxd
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/roombox.toml" <<TOML
data_dir = "$work/data"
[http]
listen = "127.0.0.1:$port"
tls = false
rate_limit_per_minute = 0
[auth]
login_max_attempts_per_ip = 1000000
login_max_failures_per_user = 1000000
[media]
enabled = false
[sfu]
udp_bind = "127.0.0.1:0"
tcp_bind = "127.0.0.1:0"
TOML
"$target/debug/roomboxd" run --config "$work/roombox.toml" > "$work/daemon.log" 2>&1 &
pid=$!
base="http://127.0.0.1:$port"
for _ in $(seq 100); do curl -sf "$base/healthz" >/dev/null && break; sleep 0.2; done
token=$(curl -sf -X POST -H 'content-type: application/json' \
    -d "{\"username\":\"admin\",\"password\":\"$(cat "$work/data/initial-admin-password")\"}" \
    "$base/api/v1/auth/login" | python3 -c 'import sys, json; print(json.load(sys.stdin)["access_token"])')

run() {
    "$venv/bin/schemathesis" run "$base/api/v1/openapi.json" -H "Authorization: Bearer $token" \
        --checks all -n "$EXAMPLES" --seed 1 -w 1 --generation-database none --no-color "$@"
}
run --exclude-path-regex '/revoke$'
run --include-path-regex '/revoke$'
if grep -q "panicked" "$work/daemon.log"; then
    echo "error: roomboxd panicked during the run:" >&2
    grep -A5 "panicked" "$work/daemon.log" >&2
    exit 1
fi
