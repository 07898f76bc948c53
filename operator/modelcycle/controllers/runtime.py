"""What every controller shares: the Context a reconcile gets, the registry of kinds, Events, metrics.

A kind registers a `reconcile(obj, ctx) -> Outcome` function; `controllers.scheduler` decides when
it runs. The object's status is written only through the status subresource and only when it
changed; nothing is ever written to a user's spec, and no finalizers or annotations are added to
user objects. The outcome and condition helpers (`planners.outcomes`) and the time helpers
(`planners.clock`) are pure and re-exported here for the controllers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import prometheus_client

from modelcycle.api import kinds
from modelcycle.builders import meta, pods
from modelcycle.controllers import cache, kube
from modelcycle.planners.clock import now as now
from modelcycle.planners.clock import parse_time as parse_time
from modelcycle.planners.clock import rfc3339 as rfc3339
from modelcycle.planners.outcomes import Change
from modelcycle.planners.outcomes import ConditionUpdate as ConditionUpdate
from modelcycle.planners.outcomes import Event as Event
from modelcycle.planners.outcomes import Outcome as Outcome
from modelcycle.planners.outcomes import Stalled as Stalled
from modelcycle.planners.outcomes import in_progress_outcome as in_progress_outcome
from modelcycle.planners.outcomes import progress_conditions as progress_conditions
from modelcycle.planners.outcomes import stalled_outcome as stalled_outcome
from modelcycle.planners.outcomes import updated_conditions as updated_conditions

logger = logging.getLogger("modelcycle.operator")

RECONCILES = prometheus_client.Counter(
    "modelcycle_operator_reconcile_total", "Reconciles by kind and result", ["kind", "result"]
)
RECONCILE_SECONDS = prometheus_client.Histogram(
    "modelcycle_operator_reconcile_duration_seconds",
    "Reconcile duration by kind",
    ["kind"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
ERRORS = prometheus_client.Counter(
    "modelcycle_operator_reconcile_errors_total", "Failed reconciles by kind and reason", ["kind", "reason"]
)
OBJECT_READY = prometheus_client.Gauge(
    "modelcycle_object_ready", "1 when the object's Ready condition is True", ["kind", "namespace", "name"]
)


@dataclass(frozen=True)
class Settings:
    workload: pods.WorkloadSettings = field(default_factory=pods.WorkloadSettings)
    resync_seconds: float = 30.0
    backoff_base_seconds: float = 2.0
    backoff_max_seconds: float = 120.0
    poll_seconds: float = 5.0
    """Requeue interval while a child is in progress (watch events usually come sooner)."""
    stats_access: str = "proxy"
    """How the ModelMonitor reaches serving pods: `proxy` (the API server's pod proxy; works in and
    outside the cluster) or `direct` (HTTP to the pod IP; needs the operator inside the cluster)."""


@dataclass
class Context:
    """What a reconcile may use: the cluster client, settings, and helpers for children.

    `reads` answers get_or_none and list from the watch-fed store for the kinds it holds (the five
    kinds, and the Jobs and Deployments the operator labels), else from the API server; the
    operator's own writes are remembered in it.
    """

    client: kube.Client
    settings: Settings
    store: cache.Store | None = None
    reads: cache.Reads = field(init=False)

    def __post_init__(self) -> None:
        self.reads = cache.Reads(self.client, self.store)

    def now(self) -> str:
        return now()

    def ensure_child(self, manifest: dict[str, Any], *, owner: dict[str, Any]) -> dict[str, Any]:
        """Create the child; on 409 adopt the existing one when the owner matches (restart-safe)."""
        try:
            created = self.client.create(manifest)
        except kube.Conflict:
            existing = self.client.get(
                kind=manifest["kind"],
                api_version=manifest.get("apiVersion"),
                namespace=manifest["metadata"].get("namespace"),
                name=manifest["metadata"]["name"],
            )
            owners = existing.get("metadata", {}).get("ownerReferences", [])
            if owner["metadata"]["uid"] not in {o.get("uid") for o in owners}:
                raise Stalled(
                    "NameConflict",
                    f"{manifest['kind']} {manifest['metadata']['name']} exists and is not owned by this "
                    f"{owner['kind']}; delete or rename it",
                ) from None
            self.reads.remember(existing)
            return existing
        self.reads.remember(created)
        return created

    def apply(self, change: Change, *, owner: dict[str, Any]) -> None:
        """Make one write a planner decided, to a child in the owner's namespace."""
        namespace = owner["metadata"]["namespace"]
        if change.verb == "create" and change.body is not None:
            self.ensure_child(change.body, owner=owner)
        elif change.verb == "replace" and change.body is not None:
            self.reads.remember(self.client.replace(change.body))
        elif change.verb == "patch" and change.body is not None:
            patched = self.client.patch(
                kind=change.kind,
                api_version=change.api_version,
                namespace=namespace,
                name=change.name,
                patch=change.body,
            )
            self.reads.remember(patched)
        elif change.verb == "delete":
            self.client.delete(
                kind=change.kind, api_version=change.api_version, namespace=namespace, name=change.name
            )
        else:
            raise ValueError(f"cannot apply {change.verb} of {change.kind} {change.name} without a body")

    def emit(self, obj: dict[str, Any], event: Event) -> None:
        emit_event(self.client, obj, event)


Reconcile = Callable[[dict[str, Any], Context], Outcome]


@dataclass(frozen=True)
class Registration:
    """One controller: its kind, its reconcile, and the RBAC rules the reconcile needs."""

    kind: kinds.Kind
    reconcile: Reconcile
    rbac_rules: tuple[dict[str, Any], ...] = ()
    """PolicyRules of what the reconcile calls (controllers/rbac.py makes the ClusterRole of them all)."""
    dependents: tuple[str, ...] = ()
    """Kinds whose objects in the same namespace are reconciled when one of these changes."""
    on_delete: Callable[[dict[str, Any]], None] | None = None
    """Called with the object when it is deleted (e.g. to drop its metrics series)."""


def emit_event(client: kube.Client, obj: dict[str, Any], event: Event) -> None:
    """Record a core/v1 Event on the object; failures to record are logged, never raised."""
    metadata = obj["metadata"]
    stamp = now()
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{metadata['name'][:200]}.{meta.short_hash(metadata['uid'], time.time_ns(), length=12)}",
            "namespace": metadata["namespace"],
        },
        "involvedObject": {
            "apiVersion": obj["apiVersion"],
            "kind": obj["kind"],
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "uid": metadata["uid"],
            "resourceVersion": metadata.get("resourceVersion"),
        },
        "reason": event.reason,
        "message": event.message[:1024],
        "type": event.type,
        "source": {"component": "modelcycle-operator"},
        "reportingComponent": "modelcycle.io/operator",
        "reportingInstance": "modelcycle-operator",
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
    # The Event is also the operator's log line: what happened to which object, and why.
    logger.log(
        logging.INFO if event.type == "Normal" else logging.WARNING,
        "%s %s/%s: %s: %s",
        obj["kind"],
        metadata["namespace"],
        metadata["name"],
        event.reason,
        event.message,
    )
    try:
        client.create(body)
    except kube.ApiError as exc:
        logger.warning(
            "could not record event %s on %s/%s: %s",
            event.reason,
            metadata["namespace"],
            metadata["name"],
            exc,
        )
