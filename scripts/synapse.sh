#!/usr/bin/env bash
# Installs matrix-synapse from PyPI into a cached virtualenv outside the repo.
# Idempotent: a second run with the venv present and importable returns at once.
#   scripts/synapse.sh install     -> prints the venv path on its last line
# Starting and stopping a homeserver for tests is done by scripts/synapse.ts
# (it writes a config per run on a free port and uses this venv).
set -euo pipefail
SYNAPSE_VERSION="${TRICKLE_SYNAPSE_VERSION:-1.163.2}"
CACHE="${TRICKLE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/trickle}"
VENV="$CACHE/synapse-$SYNAPSE_VERSION"

cmd="${1:-install}"
case "$cmd" in
  install)
    if [ -f "$VENV/.trickle-complete" ] && "$VENV/bin/python" -c 'import synapse' 2>/dev/null; then
      echo "$VENV"; exit 0
    fi
    if ! command -v python3 >/dev/null 2>&1; then
      echo "synapse.sh: python3 is missing, so no test homeserver can be installed." >&2
      echo "Install python3 (apt-get install python3 python3-venv), or run the gateway against an existing homeserver: trickle gateway --homeserver https://your.server" >&2
      exit 3
    fi
    mkdir -p "$CACHE"
    rm -rf "$VENV"
    echo "synapse.sh: installing matrix-synapse $SYNAPSE_VERSION into $VENV (once; cached afterwards)" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "matrix-synapse==$SYNAPSE_VERSION" >&2
    touch "$VENV/.trickle-complete"
    echo "$VENV"
    ;;
  path) echo "$VENV" ;;
  *) echo "usage: synapse.sh install|path" >&2; exit 2 ;;
esac
