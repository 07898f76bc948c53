#!/usr/bin/env bash
# Install everything ModelCycle's demo and tests need on a fresh machine; fast when already done.
#   - Debian packages: prometheus (the metrics tests); containerd, runc, the CNI plugins, iptables
#     (the real node); buildah, debootstrap (the image builds)
#   - a virtualenv at $MODELCYCLE_CACHE/venv with this package and its test extras
#   - the Kubernetes control-plane and node binaries, built from Go modules (tools/controlplane/build.sh)
#   - the container images: python base, pause, operator, workload (tools/images/build.sh)
# Each step prints what it does and how long it took; a warm run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${MODELCYCLE_CACHE:-$HOME/.cache/modelcycle}"
VENV="$CACHE/venv"
PYTHON="${PYTHON:-python3}"
mkdir -p "$CACHE"

if [[ $(uname -s) != Linux ]]; then
  echo "error: ModelCycle's local platform needs Linux (containerd, runc and the kubelet run here)" >&2; exit 1
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "error: ModelCycle's local platform runs a real Kubernetes node (containerd, runc, the kubelet," >&2
  echo "       kube-proxy: mounts, network namespaces, iptables, cgroups), which needs root." >&2
  echo "       Run \`make demo\` / \`make test\` as root (for example in a VM or a CI runner)." >&2
  exit 1
fi
apt_packages=(prometheus containerd runc containernetworking-plugins iptables buildah debootstrap)
need_apt=()
for p in "${apt_packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || need_apt+=("$p"); done
if [[ ${#need_apt[@]} -gt 0 ]]; then
  command -v apt-get >/dev/null || {
    echo "error: missing ${need_apt[*]} and no apt-get to install them: install them with your package manager" >&2; exit 1; }
  echo "apt-get install ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # The Debian package starts a system Prometheus; the tests start their own on loopback.
  systemctl disable --now prometheus >/dev/null 2>&1 || true
  # Likewise containerd: the real node runs its own, with its own configuration and state.
  systemctl disable --now containerd >/dev/null 2>&1 || true
fi

stamp="$VENV/.modelcycle-installed"
want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  [[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -e ".[operator,check,test,s3]"
  echo "$want" > "$stamp"
else
  # The editable install points at whichever checkout installed it; point it at this one.
  "$VENV/bin/pip" install -q --no-deps -e . >/dev/null
fi

step_start=$(date +%s)
bash tools/controlplane/build.sh
echo "setup: Kubernetes binaries ready ($(( $(date +%s) - step_start ))s)"
step_start=$(date +%s)
bash tools/images/build.sh
echo "setup: images ready ($(( $(date +%s) - step_start ))s)"
