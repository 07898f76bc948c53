#!/usr/bin/env bash
# Build the upstream Kubernetes control-plane and node binaries (kubelet, kube-proxy), etcd and
# helm from their Go modules.
#
# No download site for Kubernetes binaries is reachable here, but the Go module proxy is, so we
# compile the real thing. Binaries are cached by version under $MODELCYCLE_CACHE/bin/<k8s-version>
# and reused when present. Usage: tools/controlplane/build.sh [--print-dir]
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-1.36.3}"
ETCD_VERSION="${ETCD_VERSION:-3.6.16}"
HELM_VERSION="${HELM_VERSION:-3.19.5}"
CACHE="${MODELCYCLE_CACHE:-$HOME/.cache/modelcycle}"
BIN_DIR="$CACHE/bin/v$K8S_VERSION"
WORK="$CACHE/build"
K8S_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)
ALL_BINARIES=("${K8S_BINARIES[@]}" etcd helm)

if [[ "${1:-}" == "--print-dir" ]]; then echo "$BIN_DIR"; exit 0; fi

# One build at a time (two setups at once would compile the same binaries twice).
mkdir -p "$CACHE"
exec 9>"$CACHE/.build.lock"
flock 9

# Bump when the flags a binary is built with change, so cached binaries are rebuilt.
HELM_BUILD_REV=2   # 2: helm reports the Kubernetes version of its client-go to kubeVersion checks
missing=()
for b in "${ALL_BINARIES[@]}"; do [[ -x "$BIN_DIR/$b" ]] || missing+=("$b"); done
if [[ -x "$BIN_DIR/helm" && "$(cat "$BIN_DIR/.helm-build-rev" 2>/dev/null)" != "$HELM_BUILD_REV" ]]; then
  missing+=(helm)
fi
if [[ ${#missing[@]} -eq 0 ]]; then echo "control-plane binaries present in $BIN_DIR"; exit 0; fi
echo "building ${missing[*]} into $BIN_DIR (cold builds take a while on 2 cores)"

command -v go >/dev/null || { echo "error: Go is needed to build the control plane (or set KUBEBUILDER_ASSETS)" >&2; exit 1; }
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
mkdir -p "$BIN_DIR" "$WORK"
start=$(date +%s)

needs() { local b; for b in "$@"; do [[ " ${missing[*]} " == *" $b "* ]] && return 0; done; return 1; }

if needs "${K8S_BINARIES[@]}"; then
  mod="$WORK/k8s-$K8S_VERSION"
  mkdir -p "$mod"
  upstream_mod=$(cd "$mod" && go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  minor_patch="${K8S_VERSION#1.}"   # staging modules are tagged v0.<minor>.<patch>
  {
    echo "module modelcycle.local/controlplane"
    echo
    grep -E '^go [0-9]' "$upstream_mod"
    echo
    echo "require k8s.io/kubernetes v$K8S_VERSION"
    echo
    # Every staging module the upstream go.mod points at ./staging gets the matching published tag.
    grep -E '^\s+k8s\.io/[a-z0-9.-]+ => \./staging/' "$upstream_mod" \
      | awk -v v="v0.$minor_patch" '{print "replace " $1 " => " $1 " " v}'
  } > "$mod/go.mod"
  cat > "$mod/tools.go" <<'GO'
//go:build tools

package tools
GO
  (cd "$mod" && go mod tidy -e >/dev/null 2>&1 || true)
  commit="$(printf 'v%s' "$K8S_VERSION")"
  ldflags="-s -w"
  for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    ldflags+=" -X $pkg.gitVersion=v$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=${minor_patch%%.*}"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=2026-01-01T00:00:00Z -X $pkg.gitCommit=$commit"
  done
  for b in "${K8S_BINARIES[@]}"; do
    needs "$b" || continue
    echo "  go build $b"
    step_start=$(date +%s)
    (cd "$mod" && go get "k8s.io/kubernetes/cmd/$b@v$K8S_VERSION" >/dev/null 2>&1 || true)
    (cd "$mod" && go build -trimpath -ldflags "$ldflags" -o "$BIN_DIR/$b.tmp" "k8s.io/kubernetes/cmd/$b")
    mv "$BIN_DIR/$b.tmp" "$BIN_DIR/$b"
    echo "  built $b in $(( $(date +%s) - step_start ))s"
  done
fi

if needs etcd; then
  mod="$WORK/etcd-$ETCD_VERSION"; mkdir -p "$mod"
  [[ -f "$mod/go.mod" ]] || (cd "$mod" && go mod init modelcycle.local/etcd >/dev/null 2>&1)
  echo "  go build etcd"
  (cd "$mod" && go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >/dev/null \
    && go build -trimpath -ldflags "-s -w" -o "$BIN_DIR/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv "$BIN_DIR/etcd.tmp" "$BIN_DIR/etcd"
fi

if needs helm; then
  mod="$WORK/helm-$HELM_VERSION"; mkdir -p "$mod"
  [[ -f "$mod/go.mod" ]] || (cd "$mod" && go mod init modelcycle.local/helm >/dev/null 2>&1)
  echo "  go build helm"
  hv="helm.sh/helm/v3/internal/version"
  (cd "$mod" && go get "helm.sh/helm/v3@v$HELM_VERSION" >/dev/null)
  # As upstream's Makefile: helm's default capabilities are the Kubernetes version of its client-go
  # (v0.<minor>.x is Kubernetes 1.<minor>), else charts' kubeVersion checks see 1.20.
  client_go=$(cd "$mod" && go list -m -f '{{.Version}}' k8s.io/client-go)
  kube_minor=$(echo "$client_go" | cut -d. -f2)
  helm_ldflags="-s -w -X $hv.version=v$HELM_VERSION -X $hv.gitTreeState=clean"
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    helm_ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$kube_minor"
  done
  (cd "$mod" && go build -trimpath -ldflags "$helm_ldflags" -o "$BIN_DIR/helm.tmp" helm.sh/helm/v3/cmd/helm)
  mv "$BIN_DIR/helm.tmp" "$BIN_DIR/helm"
  echo "$HELM_BUILD_REV" > "$BIN_DIR/.helm-build-rev"
fi

echo "built in $(( $(date +%s) - start ))s: $BIN_DIR"
ls -la "$BIN_DIR"
