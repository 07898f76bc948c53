#!/usr/bin/env bash
# Install everything ModelCycle's demo and tests need on a fresh machine; fast when already done.
#   - Debian packages (prometheus for the metrics tests)
#   - a virtualenv at $MODELCYCLE_CACHE/venv with this package and its test extras
#   - the Kubernetes control-plane binaries, built from Go modules (tools/controlplane/build.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${MODELCYCLE_CACHE:-$HOME/.cache/modelcycle}"
VENV="$CACHE/venv"
PYTHON="${PYTHON:-python3}"
mkdir -p "$CACHE"

apt_packages=(prometheus)
need_apt=()
for p in "${apt_packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || need_apt+=("$p"); done
if [[ ${#need_apt[@]} -gt 0 ]]; then
  if [[ $(id -u) -eq 0 ]]; then SUDO=""; else SUDO="sudo"; fi
  echo "apt-get install ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # The Debian package starts a system Prometheus; the tests start their own on loopback.
  $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
fi

stamp="$VENV/.modelcycle-installed"
want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  [[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -e ".[test,s3]"
  echo "$want" > "$stamp"
else
  # The editable install points at whichever checkout installed it; point it at this one.
  "$VENV/bin/pip" install -q --no-deps -e . >/dev/null
fi

bash tools/controlplane/build.sh
