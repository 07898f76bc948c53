"""When each object is reconciled: at most one reconcile at a time per object, when due, with backoff.

A reconcile runs when the object or one of its children changes (watch events), when a kind it
depends on changes, when it asked to be requeued, and on a periodic resync. Failures are retried
with capped exponential backoff (with jitter); a new generation (a spec edit) is tried at once. An
event that arrives while the object's reconcile runs asks for one more pass after it, since the
running one may have read the state before the change.

A watch event that only brings back the operator's own write (the status it patched, the child it
created: `cache.Store.is_echo`) starts nothing: the reconcile that wrote it already saw that state.

`Schedule` is the bookkeeping (synchronous, with an injectable clock, unit-tested with a fake one);
`Runner` drives it from the kopf event loop and runs the reconciles in worker threads; Events are
posted by threads of their own, so a reconcile never waits for them. Every bit of per-object state
is keyed by (kind, namespace, name) and dropped when the object is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple

from modelcycle.api import conditions
from modelcycle.builders import meta
from modelcycle.controllers import kube, memory, runtime

logger = logging.getLogger("modelcycle.operator")

RERUN_DELAY_SECONDS = 0.2
EVENT_POSTERS = 4
"""Threads that post Events (a reconcile hands its Events over and goes on)."""
CHILD_KINDS = ("Job", "Deployment")
"""Children the watches deliver (those labelled with their owner's kind) and the store holds."""


class Key(NamedTuple):
    kind: str
    namespace: str
    name: str


def key_of(kind: str, obj: dict[str, Any]) -> Key:
    return Key(kind, obj["metadata"]["namespace"], obj["metadata"]["name"])


@dataclass
class _Entry:
    uid: str
    due: float = 0.0
    """Monotonic time of the next reconcile; 0 when none is scheduled."""
    failures: int = 0
    failed_generation: int | None = None
    running: bool = False
    rerun: bool = False


class Schedule:
    """Per-object bookkeeping: due times, failures and backoff, whether a reconcile runs."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        backoff_base_seconds: float = 2.0,
        backoff_max_seconds: float = 120.0,
        jitter: Callable[[], float] = lambda: random.uniform(0.8, 1.2),
    ) -> None:
        self.clock = clock
        self.backoff_base_seconds = backoff_base_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self.jitter = jitter
        self._entries: dict[Key, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Key) -> bool:
        return key in self._entries

    def track(self, key: Key, *, uid: str, generation: int | None) -> bool:
        """An event about the object: start tracking it (a new uid starts afresh). True when it is
        to be reconciled now: it is not backing off, or its spec changed since it failed."""
        entry = self._entries.get(key)
        if entry is None or entry.uid != uid:
            entry = self._entries[key] = _Entry(uid=uid)
        if entry.failures and entry.failed_generation != generation:
            entry.failures = 0  # the spec changed: try at once
            entry.due = 0.0
        return entry.failures == 0

    def forget(self, key: Key) -> None:
        self._entries.pop(key, None)

    def mark_due(self, key: Key, *, delay: float = 0.0) -> None:
        """Reconcile at the latest in `delay` seconds (an earlier due time stands); not while backing off."""
        entry = self._entries.get(key)
        if entry is None or entry.failures:
            return
        when = self.clock() + delay
        entry.due = min(entry.due, when) if entry.due else when

    def retry_now(self, key: Key) -> None:
        """What the object waits for may just have appeared: end its backoff and make it due."""
        entry = self._entries.get(key)
        if entry is not None:
            entry.failures = 0
            self.mark_due(key)

    def keys(self, *, kinds: set[str], namespace: str) -> list[Key]:
        return [key for key in self._entries if key.kind in kinds and key.namespace == namespace]

    def begin(self, key: Key) -> bool:
        """Claim the object for a reconcile. False when it is not tracked, or when one is running
        already (which then runs once more when it ends)."""
        entry = self._entries.get(key)
        if entry is None:
            return False
        if entry.running:
            entry.rerun = True
            return False
        entry.running = True
        return True

    def end(self, key: Key) -> None:
        entry = self._entries.get(key)
        if entry is None:
            return  # deleted meanwhile
        entry.running = False
        if entry.rerun:
            entry.rerun = False
            self.mark_due(key, delay=RERUN_DELAY_SECONDS)

    def succeeded(self, key: Key, *, requeue_after: float | None) -> None:
        entry = self._entries.get(key)
        if entry is None:
            return
        entry.failures = 0
        entry.failed_generation = None
        if requeue_after is not None:
            self.mark_due(key, delay=requeue_after)

    def failed(self, key: Key, *, generation: int | None) -> float:
        """Back off: try again in base * 2^(failures-1) s (capped, with jitter). Returns the delay."""
        entry = self._entries.get(key)
        if entry is None:
            return 0.0
        entry.failures += 1
        entry.failed_generation = generation
        delay = min(self.backoff_max_seconds, self.backoff_base_seconds * 2 ** (entry.failures - 1))
        delay *= self.jitter()
        entry.due = self.clock() + delay
        return delay

    def pop_due(self, *, resync: bool = False) -> list[Key]:
        """The objects due now (with resync: also every object not backing off), no longer due."""
        current = self.clock()
        found = []
        for key, entry in self._entries.items():
            if (entry.due and entry.due <= current) or (resync and entry.failures == 0):
                entry.due = 0.0
                found.append(key)
        return found


class Runner:
    """Runs reconciles from watch events on the kopf event loop, the blocking work in threads."""

    def __init__(
        self,
        ctx: runtime.Context,
        *,
        registry: Mapping[str, runtime.Registration],
        clock: Callable[[], float] = time.monotonic,
        workers: int = 8,
        namespaces: Sequence[str] = (),
    ) -> None:
        self.ctx = ctx
        self.registry = registry
        self.namespaces: list[str | None] = list(namespaces)
        """Where the watches look (empty: every namespace); the store is filled from the same."""
        settings = ctx.settings
        self.schedule = Schedule(
            clock=clock,
            backoff_base_seconds=settings.backoff_base_seconds,
            backoff_max_seconds=settings.backoff_max_seconds,
        )
        self.clock = clock
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reconcile")
        self._posters = ThreadPoolExecutor(max_workers=EVENT_POSTERS, thread_name_prefix="events")
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.trimmer = memory.Trimmer(clock=clock)

    # --- triggers -------------------------------------------------------------------------
    def forget(self, kind: str, obj: dict[str, Any]) -> None:
        key = key_of(kind, obj)
        self.schedule.forget(key)
        with contextlib.suppress(KeyError):  # never reported
            runtime.OBJECT_READY.remove(*key)
        registration = self.registry.get(kind)
        if registration is not None and registration.on_delete is not None:
            try:
                registration.on_delete(obj)
            except Exception:  # cleanup must never take the watch down
                logger.exception("on_delete of %s %s failed", kind, obj["metadata"].get("name"))

    def _cache(self, kind: str, event_type: str, obj: dict[str, Any]) -> None:
        store = self.ctx.store
        if store is not None and store.synced(kind):
            if event_type == "DELETED":
                store.delete({**obj, "kind": kind})
            else:
                store.put({**obj, "kind": kind})

    def _echo(self, kind: str, event_type: str, obj: dict[str, Any]) -> bool:
        store = self.ctx.store
        return store is not None and event_type != "DELETED" and store.is_echo(kind, obj)

    async def on_object_event(self, kind: str, event_type: str, obj: dict[str, Any]) -> None:
        echo = self._echo(kind, event_type, obj)
        self._cache(kind, event_type, obj)
        if event_type == "DELETED" or obj["metadata"].get("deletionTimestamp"):
            self.forget(kind, obj)
            self.poke_dependents(kind, obj["metadata"]["namespace"])
            return
        key = key_of(kind, obj)
        generation = obj["metadata"].get("generation")
        if self.schedule.track(key, uid=obj["metadata"]["uid"], generation=generation) and not echo:
            await self.reconcile(key)

    async def on_child_event(self, kind: str, event_type: str, child: dict[str, Any]) -> None:
        """A Job or Deployment the operator labelled changed: its owner is due."""
        echo = self._echo(kind, event_type, child)
        self._cache(kind, event_type, child)
        if echo:
            return
        metadata = child.get("metadata", {})
        for ref in metadata.get("ownerReferences", []):
            if ref.get("controller") and ref.get("kind") in self.registry:
                self.schedule.mark_due(Key(ref["kind"], metadata.get("namespace", ""), ref["name"]))

    def poke_dependents(self, kind: str, namespace: str) -> None:
        wanted = set(self.registry[kind].dependents) if kind in self.registry else set()
        if wanted:
            for key in self.schedule.keys(kinds=wanted, namespace=namespace):
                self.schedule.retry_now(key)

    # --- the loop -------------------------------------------------------------------------
    async def run_due_forever(self, *, tick: float = 0.5) -> None:
        last_resync = self.clock()
        while True:
            await asyncio.sleep(tick)
            current = self.clock()
            resync = current - last_resync >= self.ctx.settings.resync_seconds
            if resync:
                last_resync = current
            for key in self.schedule.pop_due(resync=resync):
                task = asyncio.create_task(self.reconcile(key))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            if self.ctx.store is not None:
                self.trimmer.observe(len(self.ctx.store))

    async def reconcile(self, key: Key) -> None:
        if not self.schedule.begin(key):
            return  # not tracked, or running (and then it runs once more when done)
        try:
            loop = asyncio.get_running_loop()
            poke = await loop.run_in_executor(self._executor, self._reconcile_blocking, key)
            if poke:
                self.poke_dependents(key.kind, key.namespace)
        finally:
            self.schedule.end(key)

    def _reconcile_blocking(self, key: Key) -> bool:
        """One reconcile; True when its conditions changed (its dependents may want to know)."""
        kind, namespace, name = key
        registration = self.registry[kind]
        client = self.ctx.client
        obj = self.ctx.reads.get_or_none(kind=kind, namespace=namespace, name=name)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            return False
        generation = obj["metadata"].get("generation")
        started = time.monotonic()
        status_before = obj.get("status") or {}
        try:
            outcome = registration.reconcile(obj, self.ctx)
        except runtime.Stalled as stall:
            outcome = runtime.stalled_outcome(
                obj, reason=stall.reason, message=stall.message, status=stall.extra_status
            )
            self.schedule.failed(key, generation=generation)
            runtime.ERRORS.labels(kind, stall.reason).inc()
            runtime.RECONCILES.labels(kind, "stalled").inc()
        except kube.ApiError as exc:
            logger.warning("reconcile %s %s/%s: API error %s", kind, namespace, name, exc)
            self.schedule.failed(key, generation=generation)
            runtime.ERRORS.labels(kind, f"Api{exc.status}").inc()
            runtime.RECONCILES.labels(kind, "error").inc()
            return False
        except Exception:  # a bug must not take the operator (or other objects) down
            logger.exception("reconcile %s %s/%s failed", kind, namespace, name)
            self.schedule.failed(key, generation=generation)
            runtime.ERRORS.labels(kind, "Exception").inc()
            runtime.RECONCILES.labels(kind, "error").inc()
            return False
        else:
            self.schedule.succeeded(key, requeue_after=outcome.requeue_after)
            runtime.RECONCILES.labels(kind, "success").inc()
        finally:
            runtime.RECONCILE_SECONDS.labels(kind).observe(time.monotonic() - started)

        new_status = {**status_before, **outcome.status, "observedGeneration": generation}
        if new_status != status_before:
            patch = {"status": {**outcome.status, "observedGeneration": generation}}
            try:
                patched = client.patch(
                    kind=kind, namespace=namespace, name=name, patch=patch, subresource="status"
                )
            except kube.NotFound:
                return False
            self.ctx.reads.remember({**patched, "kind": kind})
        for event in outcome.events:
            self._posters.submit(runtime.emit_event, client, obj, event)
        if key in self.schedule:  # not deleted meanwhile (its series would outlive it)
            ready = conditions.is_true(new_status.get("conditions"), conditions.READY)
            runtime.OBJECT_READY.labels(*key).set(1 if ready else 0)
        return bool(new_status.get("conditions") != status_before.get("conditions"))

    def fill_store(self) -> None:
        """One LIST per cached kind (in the watched namespaces) so that reconciles can read the store.

        Namespace patterns (globs) are not listed: the store then stays empty and reads go to the
        API server. Any failure leaves that kind to the API server too."""
        store = self.ctx.store
        if store is None or any(set(ns or "") & set("*?[!,") for ns in self.namespaces):
            return
        wanted = [(kind, None) for kind in self.registry] + [(kind, meta.OWNER_KIND) for kind in CHILD_KINDS]
        for kind, selector in wanted:
            try:
                items = [
                    obj
                    for namespace in self.namespaces or [None]  # None: every namespace
                    for obj in self.ctx.client.list(kind=kind, namespace=namespace, label_selector=selector)
                ]
            except kube.ApiError as exc:
                logger.warning("not caching %s: %s", kind, exc)
                continue
            store.fill(kind, items)

    async def start(self) -> None:
        """Fill the store, then start the due-queue loop (from kopf's startup handler, before the
        watches start: they then bring the store up to date)."""
        self._loop = asyncio.get_running_loop()
        await self._loop.run_in_executor(self._executor, self.fill_store)
        task = self._loop.create_task(self.run_due_forever())
        self._tasks.add(task)

    def stop(self) -> None:
        """Cancel the due-queue loop and pending reconciles (from kopf's cleanup handler); without
        this, kopf waits 5 s for them as "hung" tasks on every shutdown."""
        for task in list(self._tasks):
            task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._posters.shutdown(wait=False)  # the Events already decided still go out
