#!/usr/bin/env bash
# Build ModelCycle's container images on this machine, without a registry:
#
#   python-base  Debian bookworm (debootstrap --variant=minbase) + python3 with a venv at /usr/local
#   pause        the Kubernetes pause binary (build/pause/linux/pause.c of k8s.io/kubernetes), static
#   operator     images/Dockerfile.operator on python-base
#   workload     images/Dockerfile.workload on python-base
#
# Each image is tagged with a content hash of its inputs and saved as an OCI archive in
# $MODELCYCLE_CACHE/images/<name>-<tag>.tar; an archive that exists is reused, so a warm run takes
# seconds and a change under operator/ rebuilds only the operator and workload images.
# $MODELCYCLE_CACHE/images/images.env names the current image of each (sourced by the local platform).
#
# Builds use buildah with its own storage under the cache, `--network host` (buildah's default
# build network would create a bridge on 10.88.0.0/16) and the host's CA bundle as a build secret
# (TLS to the package registries may be intercepted; the bundle never becomes a layer).
#
# Usage: tools/images/build.sh [--print-env]
set -euo pipefail
cd "$(dirname "$0")/../.."

CACHE="${MODELCYCLE_CACHE:-$HOME/.cache/modelcycle}"
OUT="$CACHE/images"
ENV_FILE="$OUT/images.env"
SUITE=bookworm
MIRROR="${MODELCYCLE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
K8S_VERSION="${K8S_VERSION:-1.36.3}"
CA_BUNDLE="${MODELCYCLE_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
# Bump to rebuild every image (a change of this script's recipe, not of the inputs hashed below).
RECIPE=1

if [[ "${1:-}" == "--print-env" ]]; then cat "$ENV_FILE"; exit 0; fi

for tool in buildah debootstrap gcc go sha256sum; do
  command -v "$tool" >/dev/null || { echo "error: $tool is needed to build the images (make setup installs it)" >&2; exit 1; }
done
[[ $(id -u) -eq 0 ]] || { echo "error: building images here needs root (buildah with its own storage, debootstrap)" >&2; exit 1; }

mkdir -p "$OUT"
BUILDAH=(buildah --root "$CACHE/containers/storage" --runroot "$CACHE/containers/run" --storage-driver overlay)
hash_of() { sha256sum | cut -c1-12; }
elapsed() { echo "$(( $(date +%s) - $1 ))s"; }

# has_image NAME TAG: buildah's storage still has the image (the Dockerfiles build FROM it).
archive() { echo "$OUT/$1-$2.tar"; }
has_image() { "${BUILDAH[@]}" inspect --type image "localhost/modelcycle/$1:$2" >/dev/null 2>&1; }

save() {  # NAME TAG: write the OCI archive the node imports
  local tmp; tmp="$(archive "$1" "$2").tmp"
  rm -f "$tmp"
  "${BUILDAH[@]}" push --quiet "localhost/modelcycle/$1:$2" "oci-archive:$tmp:localhost/modelcycle/$1:$2"
  mv "$tmp" "$(archive "$1" "$2")"
  # Older builds of it: their archives, and their images in buildah's storage.
  find "$OUT" -maxdepth 1 -name "$1-*.tar" ! -name "$1-$2.tar" -delete
  "${BUILDAH[@]}" images --format '{{.Name}}:{{.Tag}}' "localhost/modelcycle/$1" 2>/dev/null \
    | grep -v ":$2\$" | xargs -r "${BUILDAH[@]}" rmi >/dev/null 2>&1 || true
}

bud() {  # NAME TAG DOCKERFILE CONTEXT [ARGS...]
  local name=$1 tag=$2 file=$3 context=$4; shift 4
  "${BUILDAH[@]}" bud --quiet --pull=never --network host --layers \
    --secret "id=ca-bundle,src=$CA_BUNDLE" -f "$file" -t "localhost/modelcycle/$name:$tag" "$@" "$context" >/dev/null
}

# ---------------------------------------------------------------- python-base
base_tag=$(printf 'recipe=%s suite=%s python3 python3-venv\n' "$RECIPE" "$SUITE" | hash_of)
if [[ ! -f "$(archive python-base "$base_tag")" ]] || ! has_image python-base "$base_tag"; then
  t=$(date +%s); echo "  image python-base:$base_tag (debootstrap $SUITE, python3, venv at /usr/local)"
  work=$(mktemp -d "$CACHE/build-base.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  debootstrap --variant=minbase --include=python3,python3-venv "$SUITE" "$work/rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; echo "error: debootstrap failed (log above)" >&2; exit 1; }
  # The venv's pip comes from the wheels python3-venv ships: no network needed.
  chroot "$work/rootfs" /usr/bin/python3 -m venv /usr/local
  rm -rf "$work/rootfs"/var/lib/apt/lists/* "$work/rootfs"/var/cache/apt/* "$work/rootfs"/usr/share/doc/* \
    "$work/rootfs"/usr/share/man/* "$work/rootfs"/usr/share/locale/* "$work/rootfs"/var/log/*
  tar -C "$work/rootfs" --numeric-owner -cf "$work/rootfs.tar" .
  printf 'FROM scratch\nADD rootfs.tar /\nENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8\nCMD ["python3"]\n' >"$work/Containerfile"
  bud python-base "$base_tag" "$work/Containerfile" "$work"
  save python-base "$base_tag"
  rm -rf "$work"; trap - EXIT
  echo "  built python-base in $(elapsed "$t")"
fi

# ---------------------------------------------------------------- pause
# The module is in Go's module cache once tools/controlplane/build.sh has run (else this fetches it).
pause_src=$(cd / && GOTOOLCHAIN=local GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" \
  | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')/build/pause/linux/pause.c
[[ -f "$pause_src" ]] || { echo "error: $pause_src not found (tools/controlplane/build.sh downloads k8s.io/kubernetes)" >&2; exit 1; }
pause_tag=$( (echo "recipe=$RECIPE"; cat "$pause_src") | hash_of)
if [[ ! -f "$(archive pause "$pause_tag")" ]] || ! has_image pause "$pause_tag"; then
  t=$(date +%s); echo "  image pause:$pause_tag (gcc -static $pause_src)"
  work=$(mktemp -d "$CACHE/build-pause.XXXXXX")
  gcc -Os -static -DVERSION="v$K8S_VERSION-modelcycle" -o "$work/pause" "$pause_src"
  strip "$work/pause"
  printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >"$work/Containerfile"
  bud pause "$pause_tag" "$work/Containerfile" "$work"
  save pause "$pause_tag"
  rm -rf "$work"
  echo "  built pause in $(elapsed "$t")"
fi

# ---------------------------------------------------------------- operator and workload
# Their inputs: what .dockerignore admits (pyproject.toml, README*, LICENSE*, operator/ less caches),
# the Dockerfile and the base image.
source_hash=$( (git ls-files -co --exclude-standard -- pyproject.toml 'README*' 'LICENSE*' operator 2>/dev/null \
  || find pyproject.toml README* operator -type f) | grep -v -e '__pycache__' -e '\.pyc$' -e '\.egg-info/' | LC_ALL=C sort \
  | while read -r f; do [[ -f "$f" ]] && printf '%s  %s\n' "$(sha256sum <"$f" | cut -d' ' -f1)" "$f"; done | hash_of)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
# The image must hold this very source: a stale layer cache once served an older install.
check_source() {  # NAME TAG
  local container mount site stale
  container=$("${BUILDAH[@]}" from --pull-never --quiet "localhost/modelcycle/$1:$2")
  mount=$("${BUILDAH[@]}" mount "$container")
  site=$(ls -d "$mount"/usr/local/lib/python3*/site-packages/modelcycle)
  stale=$(cd operator/modelcycle && find . -name '*.py' | LC_ALL=C sort | while read -r f; do
    cmp -s "$f" "$site/$f" || echo "${f#./}"; done | head -3)
  "${BUILDAH[@]}" umount "$container" >/dev/null
  "${BUILDAH[@]}" rm "$container" >/dev/null
  if [[ -n $stale ]]; then
    echo "error: image $1:$2 does not hold this source (differs: $(echo $stale)); rebuild without" >&2
    echo "       the layer cache: rm -rf $CACHE/containers, then make setup" >&2
    exit 1
  fi
}

declare -A tags
for name in operator workload; do
  file="images/Dockerfile.$name"
  tag=$( (echo "recipe=$RECIPE base=$base_tag src=$source_hash"; cat "$file") | hash_of)
  tags[$name]=$tag
  if [[ -f "$(archive "$name" "$tag")" ]] && has_image "$name" "$tag"; then continue; fi
  t=$(date +%s); echo "  image $name:$tag ($file)"
  bud "$name" "$tag" "$file" . --build-arg "PYTHON_IMAGE=localhost/modelcycle/python-base:$base_tag" \
    --build-arg "VERSION=$version" --build-arg "REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
    --build-arg "SOURCE_HASH=$source_hash"
  check_source "$name" "$tag"
  save "$name" "$tag"
  echo "  built $name in $(elapsed "$t"), $(du -m "$(archive "$name" "$tag")" | cut -f1) MB archive"
done
"${BUILDAH[@]}" rmi --prune >/dev/null 2>&1 || true

cat >"$ENV_FILE.tmp" <<ENV
PAUSE_IMAGE=localhost/modelcycle/pause:$pause_tag
PAUSE_ARCHIVE=$(archive pause "$pause_tag")
OPERATOR_IMAGE=localhost/modelcycle/operator:${tags[operator]}
OPERATOR_ARCHIVE=$(archive operator "${tags[operator]}")
WORKLOAD_IMAGE=localhost/modelcycle/workload:${tags[workload]}
WORKLOAD_ARCHIVE=$(archive workload "${tags[workload]}")
ENV
mv "$ENV_FILE.tmp" "$ENV_FILE"
echo "images ready: $ENV_FILE"
