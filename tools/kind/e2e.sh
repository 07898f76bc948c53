#!/usr/bin/env bash
# The e2e tier against a kind cluster that runs the Helm chart (`make e2e-kind`; needs Docker and
# kind). The images must be built already (`make images`). Steps:
#   1. a kind cluster whose node shares one directory of this host at the same path;
#   2. both images loaded into the node (nothing is pulled);
#   3. the chart installed into the `restricted` namespace modelcycle-system;
#   4. pytest tests/e2e in its external-cluster mode. Each test namespace's artifact claim is a
#      local PersistentVolume in the shared directory, so the tests read the snapshots and model
#      files they check from this host (a default-StorageClass volume would live inside the node).
# Settings come from the environment (the Makefile passes them): KIND, KIND_CLUSTER, CACHE, HELM,
# KUBECTL, PYTEST, OPERATOR_REPO, WORKLOAD_REPO, IMAGE_TAG; extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${KIND:=kind}" "${KIND_CLUSTER:=modelcycle-e2e}" "${CACHE:=${MODELCYCLE_CACHE:-$HOME/.cache/modelcycle}}"
: "${HELM:?}" "${KUBECTL:?}" "${PYTEST:?}" "${OPERATOR_REPO:?}" "${WORKLOAD_REPO:?}" "${IMAGE_TAG:?}"

mkdir -p "$CACHE"
config="$CACHE/kind-$KIND_CLUSTER.yaml"
kubeconfig="$CACHE/kind-$KIND_CLUSTER.kubeconfig"
artifacts="$CACHE/kind-$KIND_CLUSTER-artifacts"
mkdir -p "$artifacts"
cat > "$config" <<YAML
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
    extraMounts:
      - hostPath: $artifacts
        containerPath: $artifacts
YAML

if ! "$KIND" get clusters | grep -qx "$KIND_CLUSTER"; then
  "$KIND" create cluster --name "$KIND_CLUSTER" --config "$config" --wait 120s
elif ! docker exec "$KIND_CLUSTER-control-plane" test -d "$artifacts"; then
  echo "kind cluster $KIND_CLUSTER exists but does not share $artifacts with this host (it was made" \
    "without $config); delete it first: $KIND delete cluster --name $KIND_CLUSTER" >&2
  exit 1
fi
"$KIND" load docker-image "$OPERATOR_REPO:$IMAGE_TAG" "$WORKLOAD_REPO:$IMAGE_TAG" --name "$KIND_CLUSTER"
"$KIND" get kubeconfig --name "$KIND_CLUSTER" > "$kubeconfig"

"$KUBECTL" --kubeconfig "$kubeconfig" apply -f manifests/base/namespace.yaml
"$HELM" upgrade --install modelcycle charts/modelcycle --kubeconfig "$kubeconfig" \
  --namespace modelcycle-system --wait --timeout 5m \
  --set operator.image.repository="$OPERATOR_REPO" --set operator.image.tag="$IMAGE_TAG" \
  --set workload.image.repository="$WORKLOAD_REPO" --set workload.image.tag="$IMAGE_TAG"

KUBECONFIG="$kubeconfig" MODELCYCLE_E2E_KUBECONFIG="$kubeconfig" MODELCYCLE_E2E_ARTIFACT_ROOT="$artifacts" \
  "$PYTEST" tests/e2e "$@"
