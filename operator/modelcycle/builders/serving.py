"""Serving manifests of a ModelDeployment: Deployments (stable and canary), Service and HPA.

Naming and rollout model:

- The stable Deployment has a stable name, `<mdep>`; the version it serves is a label of its pod
  template (`modelcycle.io/version`). A rolling update is a change of that template, so the
  Deployment controller replaces pods one at a time (`maxSurge: 1`, `maxUnavailable: 0`) and keeps
  the ReplicaSet history.
- A canary is a second Deployment, `<mdep>-canary`, whose pods carry the same serving labels, so
  the Service `<mdep>` (selector: the ModelDeployment's serving labels, no version, no track)
  sends it a share of the traffic proportional to its pods. During a canary the replicas are
  split between the two tracks (`canary_split`) so the canary's share of the pods is as close to
  the weight as the replica count allows.
- The Deployments' selectors (immutable) hold the owner labels and the track (`stable`/`canary`),
  never the version.

Every function is pure: the ModelDeployment object (for its name, namespace and uid) and its spec,
parsed once by the caller (`parse_spec`), and the ModelVersion object in; dict out.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from fractions import Fraction
from typing import Any

from modelcycle import GROUP
from modelcycle.api import modeldeployment, modelversion
from modelcycle.api.modeldeployment import ModelDeploymentSpec
from modelcycle.builders import meta, pods

COMPONENT = "serving"
CONTAINER = "server"
PORT = 8080
PORT_NAME = "http"
SERVICE_PORT = 80
GRPC_PORT = 8081
"""The Open Inference Protocol over gRPC (`modelcycle serve --grpc-port`), on the pods and the Service."""
GRPC_PORT_NAME = "grpc"
TRACK = f"{GROUP}/track"
STABLE = "stable"
CANARY = "canary"
SPEC_HASH = f"{GROUP}/spec-hash"
"""Annotation on Deployments, Service and HPA: hash of the desired spec, so that a change is seen
without comparing against the defaults the API server fills in."""
MODEL_VERSION_ANNOTATION = f"{GROUP}/model-version"
READY_PATH = "/v2/health/ready"
LIVE_PATH = "/v2/health/live"
METRICS_PATH = "/metrics"
DEFAULT_REVISION_HISTORY = 5
# A terminating server keeps answering (not ready) while endpoint controllers, kube-proxy and
# ingresses stop routing to it, then answers what it has in flight; both within the grace period.
DRAIN_DELAY_SECONDS = 5.0
SHUTDOWN_TIMEOUT_SECONDS = 20.0
TERMINATION_GRACE_SECONDS = 30


def parse_spec(mdep: dict[str, Any]) -> ModelDeploymentSpec:
    """The ModelDeployment's spec, parsed (once per reconcile: every builder here takes it)."""
    return ModelDeploymentSpec.model_validate(mdep.get("spec") or {})


def dns_label(name: str, *, max_length: int = meta.MAX_NAME) -> str:
    """A DNS-1035 label (letters, digits, '-', starts with a letter) identifying `name`."""
    cleaned = re.sub(r"[^a-z0-9-]", "-", name.lower()).strip("-")
    if cleaned and not cleaned[0].isalpha():
        cleaned = f"m-{cleaned}"
    if cleaned == name and len(cleaned) <= max_length:
        return cleaned
    digest = meta.short_hash(name)
    return f"{cleaned[: max_length - len(digest) - 1].rstrip('-')}-{digest}"


def service_name(mdep: dict[str, Any]) -> str:
    return dns_label(mdep["metadata"]["name"])


def deployment_name(mdep: dict[str, Any], track: str) -> str:
    base = dns_label(mdep["metadata"]["name"])
    return base if track == STABLE else meta.child_name(base, CANARY)


def hpa_name(mdep: dict[str, Any]) -> str:
    return deployment_name(mdep, STABLE)


def service_selector(mdep: dict[str, Any]) -> dict[str, str]:
    """The serving pods of this ModelDeployment, whatever their version or track."""
    return {
        meta.OWNER: meta.label_value(mdep["metadata"]["name"]),
        meta.OWNER_KIND: mdep["kind"],
        meta.COMPONENT: COMPONENT,
    }


def track_selector(mdep: dict[str, Any], track: str) -> dict[str, str]:
    """Selector of one Deployment: the serving pods of one track. Immutable, so no version."""
    return {**service_selector(mdep), TRACK: track}


def pod_selector(mdep: dict[str, Any], *, version: int | None = None, track: str | None = None) -> str:
    """A label selector string for listing serving pods (optionally of one version or track)."""
    labels = service_selector(mdep)
    if version is not None:
        labels[meta.VERSION] = str(version)
    if track is not None:
        labels[TRACK] = track
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def url(mdep: dict[str, Any], spec: ModelDeploymentSpec) -> str:
    namespace = mdep["metadata"]["namespace"]
    return f"http://{service_name(mdep)}.{namespace}.svc.cluster.local/v2/models/{spec.model}"


def _closest(candidates: Iterable[int], total: Callable[[int], int], weight: int) -> int:
    """The candidate canary size whose share of `total(canary)` pods is closest to `weight` percent
    (the smaller on a tie; exact arithmetic, so ties are ties)."""
    return min(candidates, key=lambda canary: (abs(Fraction(100 * canary, total(canary)) - weight), canary))


def canary_split(replicas: int, weight: int) -> tuple[int, int]:
    """(stable, canary) pods of `replicas` serving pods during a canary at `weight` percent.

    Without a gateway the Service spreads requests over the ready pods evenly, so a track's share of
    the traffic is its share of the pods. The split is the one whose canary share is closest to the
    weight (the smaller canary on a tie), with at least one pod on each track: 10 replicas at 10%
    are 9 + 1 (10%), 3 replicas at 10% are 2 + 1 (33%). One replica cannot be split: its canary runs
    one pod beside it (50%). Zero replicas run nothing.
    """
    if replicas <= 0:
        return 0, 0
    if replicas == 1:
        return 1, 1
    canary = _closest(range(1, replicas), lambda _: replicas, weight)
    return replicas - canary, canary


def canary_beside(stable: int, weight: int) -> int:
    """Canary pods beside a stable Deployment whose size is not the operator's (an HPA sets it): the
    count, at least one, whose share of all the pods is closest to `weight` percent."""
    if stable <= 0:
        return 0
    ideal = stable * weight / (100 - weight)
    candidates = {max(1, math.floor(ideal)), max(1, math.ceil(ideal))}
    return _closest(sorted(candidates), lambda c: stable + c, weight)


def canary_share(stable: int, canary: int) -> int:
    """The canary's share of the serving pods, in percent (and so of the Service's requests)."""
    total = stable + canary
    return round(100 * canary / total) if total else 0


def spec_hash(value: Any) -> str:
    return meta.short_hash(json.dumps(value, sort_keys=True, separators=(",", ":")), length=16)


def model_version_number(mv: dict[str, Any]) -> int:
    return int(mv["spec"]["version"])


def serve_args(
    spec: ModelDeploymentSpec, version: modelversion.ModelVersionSpec, *, namespace: str, deployment: str
) -> list[str]:
    """`modelcycle serve` arguments: the artifact (checked by sha256), its identity, batching, the
    training profile (the drift reference the server counts live values against), and inference
    logging, filed under the ModelDeployment's `namespace` and name (`deployment`)."""
    batching = spec.batching or modeldeployment.Batching()
    args = [
        "serve",
        "--artifact-uri",
        version.artifact.uri,
        "--sha256",
        version.artifact.sha256,
        "--model-name",
        spec.model,
        "--model-version",
        str(version.version),
        "--host",
        "0.0.0.0",
        "--port",
        str(PORT),
        "--grpc-port",
        str(GRPC_PORT),
        "--max-batch-size",
        str(batching.max_batch_size),
        "--max-delay-us",
        str(batching.max_delay_microseconds),
        "--drain-delay",
        f"{DRAIN_DELAY_SECONDS:g}",
        "--shutdown-timeout",
        f"{SHUTDOWN_TIMEOUT_SECONDS:g}",
    ]
    if version.lineage is not None and version.lineage.profile_uri:
        args += ["--reference-profile", version.lineage.profile_uri]
    if spec.logging is not None and spec.logging.sample_rate > 0:
        args += [
            "--log-sample-rate",
            f"{spec.logging.sample_rate:g}",
            "--log-namespace",
            namespace,
            "--log-deployment",
            deployment,
            "--log-flush-seconds",
            str(spec.logging.flush_interval_seconds),
            "--log-segment-rows",
            str(spec.logging.max_segment_rows),
            "--log-buffer-rows",
            str(spec.logging.max_buffer_rows),
        ]
    return args


def probes() -> dict[str, Any]:
    return {
        "readinessProbe": {
            "httpGet": {"path": READY_PATH, "port": PORT_NAME},
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": LIVE_PATH, "port": PORT_NAME},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
    }


def pod_labels(
    mdep: dict[str, Any], spec: ModelDeploymentSpec, version: modelversion.ModelVersionSpec, track: str
) -> dict[str, str]:
    return {
        **meta.owner_labels(mdep, component=COMPONENT),
        meta.MODEL: spec.model,
        meta.VERSION: str(version.version),
        TRACK: track,
    }


def pod_template(
    mdep: dict[str, Any],
    spec: ModelDeploymentSpec,
    mv: dict[str, Any],
    *,
    track: str,
    settings: pods.WorkloadSettings,
) -> dict[str, Any]:
    version = modelversion.ModelVersionSpec.model_validate(mv["spec"])
    resources = spec.resources.to_json_dict() if spec.resources else None
    pod_spec = pods.workload_pod_spec(
        settings=settings,
        container_name=CONTAINER,
        args=serve_args(
            spec, version, namespace=mdep["metadata"]["namespace"], deployment=mdep["metadata"]["name"]
        ),
        image=spec.image,
        resources=resources or None,
        restart_policy="Always",
        ports=[
            {"name": PORT_NAME, "containerPort": PORT, "protocol": "TCP"},
            {"name": GRPC_PORT_NAME, "containerPort": GRPC_PORT, "protocol": "TCP"},
        ],
        probes=probes(),
    )
    pod_spec["terminationGracePeriodSeconds"] = TERMINATION_GRACE_SECONDS
    return {
        "metadata": {
            "labels": pod_labels(mdep, spec, version, track),
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(PORT),
                "prometheus.io/path": METRICS_PATH,
                MODEL_VERSION_ANNOTATION: mv["metadata"]["name"],
            },
        },
        "spec": pod_spec,
    }


def deployment(
    mdep: dict[str, Any],
    spec: ModelDeploymentSpec,
    mv: dict[str, Any],
    *,
    track: str,
    replicas: int,
    settings: pods.WorkloadSettings,
) -> dict[str, Any]:
    """The Deployment of one track serving `mv`. `replicas` is its desired size (an HPA may own it).

    The spec-hash annotation covers everything but `replicas`, so the controller can tell a
    template change (a rollout) from a scale.
    """
    body: dict[str, Any] = {
        "selector": {"matchLabels": track_selector(mdep, track)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "progressDeadlineSeconds": spec.progress_deadline_seconds,
        "revisionHistoryLimit": DEFAULT_REVISION_HISTORY,
        "minReadySeconds": 0,
        "template": pod_template(mdep, spec, mv, track=track, settings=settings),
    }
    metadata = meta.child_metadata(
        mdep,
        name=deployment_name(mdep, track),
        component=COMPONENT,
        extra_labels={meta.MODEL: spec.model, meta.VERSION: str(model_version_number(mv)), TRACK: track},
    )
    metadata["annotations"] = {SPEC_HASH: spec_hash(body), MODEL_VERSION_ANNOTATION: mv["metadata"]["name"]}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {"replicas": replicas, **body},
    }


def service(mdep: dict[str, Any], spec: ModelDeploymentSpec) -> dict[str, Any]:
    """ClusterIP Service `<mdep>`: port 80 to the pods' http port and 8081 to their grpc port (with
    `appProtocol: grpc`, so meshes and gateways balance per call), across versions and tracks."""
    body = {
        "type": "ClusterIP",
        "selector": service_selector(mdep),
        "ports": [
            {"name": PORT_NAME, "port": SERVICE_PORT, "targetPort": PORT_NAME, "protocol": "TCP"},
            {
                "name": GRPC_PORT_NAME,
                "port": GRPC_PORT,
                "targetPort": GRPC_PORT_NAME,
                "protocol": "TCP",
                "appProtocol": "grpc",
            },
        ],
    }
    metadata = meta.child_metadata(
        mdep, name=service_name(mdep), component=COMPONENT, extra_labels={meta.MODEL: spec.model}
    )
    metadata["annotations"] = {SPEC_HASH: spec_hash(body)}
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": body}


def horizontal_pod_autoscaler(mdep: dict[str, Any], spec: ModelDeploymentSpec) -> dict[str, Any] | None:
    """autoscaling/v2 HPA on CPU for the stable Deployment; None when autoscaling is unset."""
    if spec.autoscaling is None:
        return None
    scaling = spec.autoscaling
    body = {
        "scaleTargetRef": {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": deployment_name(mdep, STABLE),
        },
        "minReplicas": scaling.min_replicas,
        "maxReplicas": scaling.max_replicas,
        "metrics": [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": scaling.target_cpu},
                },
            }
        ],
    }
    metadata = meta.child_metadata(
        mdep, name=hpa_name(mdep), component=COMPONENT, extra_labels={meta.MODEL: spec.model}
    )
    metadata["annotations"] = {SPEC_HASH: spec_hash(body)}
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata,
        "spec": body,
    }


def stable_replicas(spec: ModelDeploymentSpec, *, current: int | None) -> int:
    """Desired size of the stable Deployment: spec.replicas, or the HPA's current choice (its min
    when the Deployment is new) while autoscaling is set."""
    if spec.autoscaling is None:
        return spec.replicas
    if current is None:
        return spec.autoscaling.min_replicas
    return min(max(current, spec.autoscaling.min_replicas), spec.autoscaling.max_replicas)
