#!/usr/bin/env bash
# Installs what the tests, the demo and the benches need, once; fast when all is present.
#  - Debian packages: socat (PTY pairs), direwolf (the KISS/AFSK hardware-in-the-loop tests),
#    tshark (decoding captured frames with an independent dissector)
#  - node_modules (npm install when missing)
#  - the Synapse virtualenv, cached outside the repo (scripts/synapse.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v socat >/dev/null 2>&1 || need_pkgs+=(socat)
command -v direwolf >/dev/null 2>&1 || need_pkgs+=(direwolf)
command -v tshark >/dev/null 2>&1 || need_pkgs+=(tshark)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test-deps: installing Debian packages: ${need_pkgs[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    # tshark asks whether non-root users may capture packets; answer "no" up front so the
    # install never stops at a debconf prompt.
    if command -v debconf-set-selections >/dev/null 2>&1; then
      echo 'wireshark-common wireshark-common/install-setuid boolean false' | debconf-set-selections
    fi
    apt-get update -qq >/dev/null
    apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  else
    echo "test-deps: missing ${need_pkgs[*]}; install them with: sudo apt-get install ${need_pkgs[*]}" >&2
    exit 1
  fi
fi

[ -d node_modules ] || npm install --no-audit --no-fund

if command -v python3 >/dev/null 2>&1; then
  bash scripts/synapse.sh install >/dev/null
else
  echo "test-deps: python3 is missing: the end-to-end tests and the demo need it for a local Synapse." >&2
  echo "           The gateway itself can use any existing homeserver: trickle gateway --homeserver https://…" >&2
fi
