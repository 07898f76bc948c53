"""The reconcile machinery every kind shares: one level-triggered reconcile per object at a time.

A kind registers a `reconcile(obj, ctx) -> Outcome` function. It runs when the object or one of
its children changes (kopf watch events), when a kind it depends on changes, when it asked to be
requeued, and on a periodic resync. Failures are retried with capped exponential backoff. The
object's status is written only through the status subresource and only when it changed; nothing
is ever written to a user's spec, and no finalizers or annotations are added to user objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import prometheus_client

from modelcycle.api import conditions, kinds
from modelcycle.builders import meta, pods
from modelcycle.controllers import kube
from modelcycle.planners.clock import now as now
from modelcycle.planners.clock import parse_time as parse_time
from modelcycle.planners.clock import rfc3339 as rfc3339
from modelcycle.planners.outcomes import Change
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
    """What a reconcile may use: the cluster client, settings, and helpers for children."""

    client: kube.Client
    settings: Settings

    def now(self) -> str:
        return now()

    def ensure_child(self, manifest: dict[str, Any], *, owner: dict[str, Any]) -> dict[str, Any]:
        """Create the child; on 409 adopt the existing one when the owner matches (restart-safe)."""
        try:
            return self.client.create(manifest)
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
            return existing

    def apply(self, change: Change, *, owner: dict[str, Any]) -> None:
        """Make one write a planner decided, to a child in the owner's namespace."""
        namespace = owner["metadata"]["namespace"]
        if change.verb == "create" and change.body is not None:
            self.ensure_child(change.body, owner=owner)
        elif change.verb == "replace" and change.body is not None:
            self.client.replace(change.body)
        elif change.verb == "patch" and change.body is not None:
            self.client.patch(
                kind=change.kind,
                api_version=change.api_version,
                namespace=namespace,
                name=change.name,
                patch=change.body,
            )
        elif change.verb == "delete":
            self.client.delete(
                kind=change.kind, api_version=change.api_version, namespace=namespace, name=change.name
            )
        else:
            raise ValueError(f"cannot apply {change.verb} of {change.kind} {change.name} without a body")

    def emit(self, obj: dict[str, Any], event: Event) -> None:
        emit_event(self.client, obj, event)


Reconcile = Callable[[dict[str, Any], Context], Outcome]


@dataclass
class Registration:
    kind: kinds.Kind
    reconcile: Reconcile
    dependents: tuple[str, ...] = ()
    """Kinds whose objects in the same namespace are reconciled when one of these changes."""
    on_delete: Callable[[dict[str, Any]], None] | None = None
    """Called with the object when it is deleted (e.g. to drop its metrics series)."""


REGISTRY: dict[str, Registration] = {}


def register(
    kind: kinds.Kind,
    reconcile: Reconcile,
    *,
    dependents: tuple[str, ...] = (),
    on_delete: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    REGISTRY[kind.kind] = Registration(
        kind=kind, reconcile=reconcile, dependents=dependents, on_delete=on_delete
    )


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


@dataclass
class _Schedule:
    due: float = 0.0
    failures: int = 0
    failed_generation: int | None = None


class Runner:
    """Runs reconciles: at most one at a time per object, when due, with backoff on failure."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._locks: dict[str, asyncio.Lock] = {}
        self._schedule: dict[str, _Schedule] = {}
        self._known: dict[str, tuple[str, str, str]] = {}  # uid -> (kind, namespace, name)
        self._tasks: set[asyncio.Task[None]] = set()

    # --- triggers -------------------------------------------------------------------------
    def forget(self, kind: str, obj: dict[str, Any]) -> None:
        uid = obj["metadata"]["uid"]
        self._known.pop(uid, None)
        self._schedule.pop(uid, None)
        self._locks.pop(uid, None)
        with contextlib.suppress(KeyError):  # never reported
            OBJECT_READY.remove(kind, obj["metadata"]["namespace"], obj["metadata"]["name"])
        registration = REGISTRY.get(kind)
        if registration is not None and registration.on_delete is not None:
            try:
                registration.on_delete(obj)
            except Exception:  # cleanup must never take the watch down
                logger.exception("on_delete of %s %s failed", kind, obj["metadata"].get("name"))

    async def on_object_event(self, kind: str, event_type: str, obj: dict[str, Any]) -> None:
        if event_type == "DELETED" or obj["metadata"].get("deletionTimestamp"):
            self.forget(kind, obj)
            await self.poke_dependents(kind, obj["metadata"]["namespace"])
            return
        uid = obj["metadata"]["uid"]
        self._known[uid] = (kind, obj["metadata"]["namespace"], obj["metadata"]["name"])
        schedule = self._schedule.setdefault(uid, _Schedule())
        generation = obj["metadata"].get("generation")
        if schedule.failures and schedule.failed_generation != generation:
            schedule.failures = 0  # the spec changed: try at once
            schedule.due = 0.0
        if schedule.failures == 0:
            await self.reconcile(kind, obj["metadata"]["namespace"], obj["metadata"]["name"])

    async def on_child_event(self, child: dict[str, Any]) -> None:
        for ref in child.get("metadata", {}).get("ownerReferences", []):
            if ref.get("controller") and ref.get("kind") in REGISTRY:
                self.mark_due(ref["uid"])

    async def poke_dependents(self, kind: str, namespace: str) -> None:
        wanted = set(REGISTRY[kind].dependents) if kind in REGISTRY else set()
        for uid, (other_kind, other_ns, _) in list(self._known.items()):
            if other_kind in wanted and other_ns == namespace:
                # What a dependent waits for (a missing reference, say) may just have appeared:
                # try it now instead of at the end of its backoff.
                schedule = self._schedule.setdefault(uid, _Schedule())
                schedule.failures = 0
                self.mark_due(uid)

    def mark_due(self, uid: str, *, delay: float = 0.0) -> None:
        schedule = self._schedule.setdefault(uid, _Schedule())
        if schedule.failures == 0:
            schedule.due = (
                min(schedule.due, time.monotonic() + delay) if schedule.due else time.monotonic() + delay
            )

    # --- the loop -------------------------------------------------------------------------
    async def run_due_forever(self, *, tick: float = 0.5) -> None:
        last_resync = time.monotonic()
        while True:
            await asyncio.sleep(tick)
            current = time.monotonic()
            resync = current - last_resync >= self.ctx.settings.resync_seconds
            if resync:
                last_resync = current
            for uid, (kind, namespace, name) in list(self._known.items()):
                schedule = self._schedule.get(uid)
                if schedule is None:
                    continue
                if (schedule.due and schedule.due <= current) or (resync and schedule.failures == 0):
                    schedule.due = 0.0
                    task = asyncio.create_task(self.reconcile(kind, namespace, name))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)

    async def reconcile(self, kind: str, namespace: str, name: str) -> None:
        key = f"{kind}/{namespace}/{name}"
        lock = self._locks.setdefault(key, asyncio.Lock())
        if lock.locked():
            # A reconcile is running; it reads the latest state, so ask for one more pass after it.
            self._rerun_after(kind, namespace, name)
            return
        async with lock:
            await asyncio.to_thread(self._reconcile_blocking, kind, namespace, name)

    def _rerun_after(self, kind: str, namespace: str, name: str) -> None:
        for uid, known in self._known.items():
            if known == (kind, namespace, name):
                self.mark_due(uid, delay=0.2)

    def _reconcile_blocking(self, kind: str, namespace: str, name: str) -> None:
        registration = REGISTRY[kind]
        client = self.ctx.client
        obj = client.get_or_none(kind=kind, namespace=namespace, name=name)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            return
        uid = obj["metadata"]["uid"]
        schedule = self._schedule.setdefault(uid, _Schedule())
        generation = obj["metadata"].get("generation")
        started = time.monotonic()
        status_before = obj.get("status") or {}
        try:
            outcome = registration.reconcile(obj, self.ctx)
        except Stalled as stall:
            outcome = stalled_outcome(
                obj, reason=stall.reason, message=stall.message, status=stall.extra_status
            )
            self._back_off(schedule, generation)
            ERRORS.labels(kind, stall.reason).inc()
            RECONCILES.labels(kind, "stalled").inc()
        except kube.ApiError as exc:
            logger.warning("reconcile %s %s/%s: API error %s", kind, namespace, name, exc)
            self._back_off(schedule, generation)
            ERRORS.labels(kind, f"Api{exc.status}").inc()
            RECONCILES.labels(kind, "error").inc()
            return
        except Exception:  # a bug must not take the operator (or other objects) down
            logger.exception("reconcile %s %s/%s failed", kind, namespace, name)
            self._back_off(schedule, generation)
            ERRORS.labels(kind, "Exception").inc()
            RECONCILES.labels(kind, "error").inc()
            return
        else:
            schedule.failures = 0
            schedule.failed_generation = None
            RECONCILES.labels(kind, "success").inc()
        finally:
            RECONCILE_SECONDS.labels(kind).observe(time.monotonic() - started)

        new_status = {**status_before, **outcome.status, "observedGeneration": generation}
        if new_status != status_before:
            patch = {"status": {**outcome.status, "observedGeneration": generation}}
            try:
                client.patch(kind=kind, namespace=namespace, name=name, patch=patch, subresource="status")
            except kube.NotFound:
                return
        for event in outcome.events:
            emit_event(client, obj, event)
        ready = conditions.is_true(new_status.get("conditions"), conditions.READY)
        OBJECT_READY.labels(kind, namespace, name).set(1 if ready else 0)
        if outcome.requeue_after is not None and schedule.failures == 0:
            self.mark_due(uid, delay=outcome.requeue_after)
        if new_status.get("conditions") != status_before.get("conditions"):
            asyncio.run_coroutine_threadsafe(self.poke_dependents(kind, namespace), self._loop)

    def _back_off(self, schedule: _Schedule, generation: int | None) -> None:
        schedule.failures += 1
        schedule.failed_generation = generation
        settings = self.ctx.settings
        delay = min(
            settings.backoff_max_seconds, settings.backoff_base_seconds * 2 ** (schedule.failures - 1)
        )
        schedule.due = time.monotonic() + delay * random.uniform(0.8, 1.2)

    _loop: asyncio.AbstractEventLoop

    def start(self) -> None:
        """Start the due-queue loop on the running event loop (from kopf's startup handler)."""
        self._loop = asyncio.get_running_loop()
        task = self._loop.create_task(self.run_due_forever())
        self._tasks.add(task)

    def stop(self) -> None:
        """Cancel the due-queue loop and pending reconciles (from kopf's cleanup handler); without
        this, kopf waits 5 s for them as "hung" tasks on every shutdown."""
        for task in list(self._tasks):
            task.cancel()
