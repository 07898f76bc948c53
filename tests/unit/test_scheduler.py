"""The scheduler with a fake clock: backoff, resync, a rerun after a running reconcile, forgetting.

And the Runner end to end without a cluster: 10,000 objects created and deleted leave no state.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from modelcycle.api import kinds
from modelcycle.controllers import cache, runtime, scheduler
from modelcycle.controllers.scheduler import Key, Schedule

KEY = Key("TrainingRun", "ml", "iris")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def schedule(clock: FakeClock) -> Schedule:
    return Schedule(clock=clock, backoff_base_seconds=2, backoff_max_seconds=30, jitter=lambda: 1.0)


def test_a_new_object_is_reconciled_at_once(schedule: Schedule) -> None:
    assert schedule.track(KEY, uid="u1", generation=1)
    assert schedule.begin(KEY)


def test_backoff_doubles_up_to_the_ceiling(schedule: Schedule, clock: FakeClock) -> None:
    schedule.track(KEY, uid="u1", generation=1)
    delays = [schedule.failed(KEY, generation=1) for _ in range(6)]
    assert delays == [2, 4, 8, 16, 30, 30]
    assert schedule.pop_due() == []
    clock.advance(29.9)
    assert schedule.pop_due() == []
    clock.advance(0.2)
    assert schedule.pop_due() == [KEY]


def test_while_backing_off_events_and_requeues_wait(schedule: Schedule, clock: FakeClock) -> None:
    schedule.track(KEY, uid="u1", generation=1)
    schedule.failed(KEY, generation=1)
    assert not schedule.track(KEY, uid="u1", generation=1)  # a status event: not now
    schedule.mark_due(KEY)
    assert schedule.pop_due() == []
    clock.advance(2)
    assert schedule.pop_due() == [KEY]


def test_a_spec_change_ends_the_backoff(schedule: Schedule) -> None:
    schedule.track(KEY, uid="u1", generation=1)
    schedule.failed(KEY, generation=1)
    assert schedule.track(KEY, uid="u1", generation=2)


def test_success_resets_the_backoff_and_requeues(schedule: Schedule, clock: FakeClock) -> None:
    schedule.track(KEY, uid="u1", generation=1)
    schedule.failed(KEY, generation=1)
    schedule.failed(KEY, generation=1)
    clock.advance(4)
    assert schedule.pop_due() == [KEY]  # the retry runs ...
    schedule.succeeded(KEY, requeue_after=5)  # ... and succeeds, asking to look again in 5 s
    clock.advance(4.9)
    assert schedule.pop_due() == []
    clock.advance(0.1)
    assert schedule.pop_due() == [KEY]
    assert schedule.failed(KEY, generation=1) == 2  # counting starts over


def test_an_earlier_due_time_stands(schedule: Schedule, clock: FakeClock) -> None:
    schedule.track(KEY, uid="u1", generation=1)
    schedule.mark_due(KEY, delay=1)
    schedule.mark_due(KEY, delay=60)
    clock.advance(1)
    assert schedule.pop_due() == [KEY]
    assert schedule.pop_due() == []  # popped: no longer due


def test_resync_takes_every_object_not_backing_off(schedule: Schedule) -> None:
    other = Key("Dataset", "ml", "iris")
    schedule.track(KEY, uid="u1", generation=1)
    schedule.track(other, uid="u2", generation=1)
    schedule.failed(other, generation=1)
    assert schedule.pop_due() == []
    assert schedule.pop_due(resync=True) == [KEY]


def test_an_event_during_a_reconcile_runs_it_once_more_after(schedule: Schedule, clock: FakeClock) -> None:
    schedule.track(KEY, uid="u1", generation=1)
    assert schedule.begin(KEY)
    assert not schedule.begin(KEY)  # running: asks for a rerun
    assert not schedule.begin(KEY)  # asked twice, still one rerun
    schedule.end(KEY)
    clock.advance(scheduler.RERUN_DELAY_SECONDS)
    assert schedule.pop_due() == [KEY]
    assert schedule.begin(KEY)
    schedule.end(KEY)
    clock.advance(60)
    assert schedule.pop_due() == []


def test_retry_now_ends_a_backoff(schedule: Schedule) -> None:
    schedule.track(KEY, uid="u1", generation=1)
    schedule.failed(KEY, generation=1)
    schedule.retry_now(KEY)
    assert schedule.pop_due() == [KEY]


def test_forget_drops_everything_even_while_running(schedule: Schedule, clock: FakeClock) -> None:
    schedule.track(KEY, uid="u1", generation=1)
    schedule.begin(KEY)
    schedule.begin(KEY)  # rerun asked
    schedule.forget(KEY)
    schedule.end(KEY)  # the running reconcile ends after the delete
    schedule.mark_due(KEY)
    schedule.succeeded(KEY, requeue_after=1)
    schedule.failed(KEY, generation=1)
    clock.advance(100)
    assert len(schedule) == 0
    assert schedule.pop_due(resync=True) == []
    assert not schedule.begin(KEY)  # untracked objects are not reconciled


def test_a_recreated_object_starts_afresh(schedule: Schedule) -> None:
    schedule.track(KEY, uid="u1", generation=3)
    schedule.failed(KEY, generation=3)
    assert schedule.track(KEY, uid="u2", generation=3)  # same name and generation, another object


# --------------------------------------------------------------------------- the Runner, no cluster


class MemoryClient:
    """get_or_none and status patches on objects held in memory."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}

    def get_or_none(self, *, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((kind, namespace, name))

    def patch(
        self, *, kind: str, namespace: str, name: str, patch: dict[str, Any], subresource: str
    ) -> dict[str, Any]:
        obj = self.objects[(kind, namespace, name)]
        obj.setdefault("status", {}).update(patch["status"])
        return obj

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return body


def test_ten_thousand_objects_created_and_deleted_leave_no_state() -> None:
    client = MemoryClient()
    reconciled: list[str] = []

    def reconcile(obj: dict[str, Any], ctx: runtime.Context) -> runtime.Outcome:
        reconciled.append(obj["metadata"]["name"])
        return runtime.Outcome(status={"phase": "Done"}, requeue_after=30)

    registry = {"TrainingRun": runtime.Registration(kind=kinds.TRAINING_RUN, reconcile=reconcile)}
    ctx = runtime.Context(client=client, settings=runtime.Settings())  # type: ignore[arg-type]
    runner = scheduler.Runner(ctx, registry=registry)

    def obj(i: int) -> dict[str, Any]:
        return {
            "apiVersion": "modelcycle.io/v1alpha1",
            "kind": "TrainingRun",
            "metadata": {"name": f"run-{i}", "namespace": "leak", "uid": f"uid-{i}", "generation": 1},
            "spec": {},
        }

    async def scenario() -> None:
        for i in range(10_000):
            client.objects[("TrainingRun", "leak", f"run-{i}")] = obj(i)
        await asyncio.gather(*(runner.on_object_event("TrainingRun", "ADDED", obj(i)) for i in range(10_000)))
        assert len(runner.schedule) == 10_000
        for i in range(10_000):
            del client.objects[("TrainingRun", "leak", f"run-{i}")]
            await runner.on_object_event("TrainingRun", "DELETED", obj(i))
        runner.stop()

    asyncio.run(scenario())
    assert len(reconciled) == 10_000
    assert len(runner.schedule) == 0
    series = [
        sample
        for metric in runtime.OBJECT_READY.collect()
        for sample in metric.samples
        if sample.labels.get("namespace") == "leak"
    ]
    assert series == []


class VersioningClient(MemoryClient):
    """Each status patch makes a new resourceVersion, as the API server does."""

    def patch(
        self, *, kind: str, namespace: str, name: str, patch: dict[str, Any], subresource: str
    ) -> dict[str, Any]:
        obj = super().patch(kind=kind, namespace=namespace, name=name, patch=patch, subresource=subresource)
        obj["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 1)
        return {**obj, "metadata": dict(obj["metadata"])}


def test_the_echo_of_an_own_write_starts_no_reconcile() -> None:
    client = VersioningClient()
    reconciled: list[str] = []

    def reconcile(obj: dict[str, Any], ctx: runtime.Context) -> runtime.Outcome:
        reconciled.append(obj["metadata"]["resourceVersion"])
        return runtime.Outcome(status={"phase": "Done", "seen": obj["metadata"]["resourceVersion"]})

    registry = {"TrainingRun": runtime.Registration(kind=kinds.TRAINING_RUN, reconcile=reconcile)}
    store = cache.Store()
    ctx = runtime.Context(client=client, settings=runtime.Settings(), store=store)  # type: ignore[arg-type]
    runner = scheduler.Runner(ctx, registry=registry)
    run = {
        "apiVersion": "modelcycle.io/v1alpha1",
        "kind": "TrainingRun",
        "metadata": {"name": "iris", "namespace": "ml", "uid": "u1", "generation": 1, "resourceVersion": "1"},
        "spec": {},
    }
    client.objects[("TrainingRun", "ml", "iris")] = run
    store.fill("TrainingRun", [])
    store.fill("Job", [])

    def version(rv: str) -> dict[str, Any]:
        return {**run, "metadata": {**run["metadata"], "resourceVersion": rv}}

    async def scenario() -> None:
        await runner.on_object_event("TrainingRun", "ADDED", version("1"))  # reconciled, status patched
        await runner.on_object_event("TrainingRun", "MODIFIED", version("2"))  # that patch: an echo
        assert reconciled == ["1"]
        await runner.on_object_event("TrainingRun", "MODIFIED", version("3"))  # someone else's change
        assert reconciled == ["1", "3"]

        owner = {"kind": "TrainingRun", "name": "iris", "controller": True}
        job = {"kind": "Job", "metadata": {"name": "iris-train", "namespace": "ml", "uid": "j",
                                          "resourceVersion": "7", "ownerReferences": [owner]}}  # fmt: skip
        ctx.reads.remember(job)  # the operator created it
        await runner.on_child_event("Job", "ADDED", job)
        assert runner.schedule.pop_due() == []
        changed = {**job, "metadata": {**job["metadata"], "resourceVersion": "8"}}  # the Job controller's
        await runner.on_child_event("Job", "MODIFIED", changed)
        assert runner.schedule.pop_due() == [KEY._replace(namespace="ml", name="iris")]
        runner.stop()

    asyncio.run(scenario())
