#!/usr/bin/env bash
# Extra step of scripts/test: the static checks of the Yocto layer (the bitbake build itself needs
# the internet and hours; it does not run here). Each check must pass with no output on stderr:
#   1. roomboxd-crates.inc is what scripts/yocto-crates makes from Cargo.lock (no drift);
#   2. every kas file validates against the JSON schema kas ships, and every remote layer is
#      pinned by a full commit id;
#   3. oelint-adv is clean under the layer's committed .oelint.cfg (release blacksail);
#   4. `systemd-analyze verify` of the layer's units prints nothing (in a scratch root with the
#      host's units and stub executables), and `systemd-analyze security` scores roomboxd.
# oelint-adv and kas (for its schema) come from PyPI, pinned, in a venv of their own
# ($ROOMBOX_YOCTO_VENV, default ~/.cache/roombox/yocto-venv; made once).
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$SECONDS
venv=${ROOMBOX_YOCTO_VENV:-$HOME/.cache/roombox/yocto-venv}
want="oelint-adv==9.11.2 kas==5.5"
if [[ ! -x $venv/bin/oelint-adv || "$(cat "$venv/.roombox-pins" 2>/dev/null)" != "$want" ]]; then
    python3 -m venv "$venv"
    # shellcheck disable=SC2086
    "$venv/bin/pip" install --quiet --disable-pip-version-check $want
    echo "$want" > "$venv/.roombox-pins"
fi
setup_s=$((SECONDS - start))
"$venv/bin/python" scripts/yocto-check
echo "==> 45-yocto: passed in $((SECONDS - start)) s (venv ${setup_s} s)"
