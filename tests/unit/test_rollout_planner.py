"""plan_rollout, table-driven: every ModelDeployment transition from observed state to writes and status.

No cluster: the children are what the builders produce, with the status the Deployment controller
would report.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

import pytest

from modelcycle.builders import meta, pods, serving
from modelcycle.planners import rollout
from modelcycle.planners.outcomes import Stalled

NOW = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)
SETTINGS = pods.WorkloadSettings()
CANARY = {"type": "Canary", "canary": {"weight": 50, "promoteAfterSeconds": 60}}


def stamp(seconds_ago: float) -> str:
    return (NOW - datetime.timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def mdep(*, generation: int = 1, status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "modelcycle.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "iris", "namespace": "ml", "uid": "uid-iris", "generation": generation},
        "spec": {"model": "iris", **spec},
        "status": status or {},
    }


def mv(version: int, validated: str = "True", reason: str = "GatesPassed") -> dict[str, Any]:
    return {
        "metadata": {"name": f"iris-v{version}", "namespace": "ml"},
        "spec": {
            "model": "iris",
            "version": version,
            "artifact": {"uri": f"pvc://models/iris/v{version}.skops", "sha256": "a" * 64},
        },
        "status": {"conditions": [{"type": "Validated", "status": validated, "reason": reason}]},
    }


def deployed(
    owner: dict[str, Any],
    version: int,
    *,
    track: str = serving.STABLE,
    replicas: int = 2,
    complete: bool = True,
    deadline: bool = False,
    available_for: float = 600,
) -> dict[str, Any]:
    """A Deployment the builders made for `version`, as the Deployment controller reports it."""
    manifest = serving.deployment(
        owner, serving.parse_spec(owner), mv(version), track=track, replicas=replicas, settings=SETTINGS
    )
    manifest["metadata"].update(generation=3)
    ready = replicas if complete else 0
    conditions = [{"type": "Available", "status": "True", "lastTransitionTime": stamp(available_for)}]
    if deadline:
        conditions.append({"type": "Progressing", "status": "False", "reason": rollout.DEADLINE_REASON})
    manifest["status"] = {
        "observedGeneration": 3,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "availableReplicas": ready,
        "readyReplicas": ready,
        "conditions": conditions if complete else conditions[1:],
    }
    return manifest


def degraded(version: int, *, served: int, generation: int = 1) -> dict[str, Any]:
    """The status after `version` was rolled back in `generation`."""
    return {
        "servedVersion": served,
        "modelVersion": f"iris-v{served}",
        "failedVersion": version,
        "conditions": [
            {
                "type": "Degraded",
                "status": "True",
                "reason": rollout.DEADLINE_REASON,
                "message": f"version {version} did not become ready; rolled back to version {served}",
                "observedGeneration": generation,
            }
        ],
    }


@dataclass
class Case:
    owner: dict[str, Any]
    versions: list[dict[str, Any]]
    stable: int | dict[str, Any] | None = None
    canary: dict[str, Any] | None = None
    hpa: bool = False
    changes: list[tuple[str, str, Any]] = field(default_factory=list)
    """(verb, child name, template version / patch / None) of each write, in order."""
    events: list[str] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    ready: str = "False"


def serving_v(version: int, **extra: Any) -> dict[str, Any]:
    return {"servedVersion": version, "modelVersion": f"iris-v{version}", **extra}


def build_cases() -> dict[str, Case]:
    plain = mdep(replicas=2, status=serving_v(1))
    canary = mdep(replicas=2, strategy=CANARY, status=serving_v(1))
    return {
        "pinned-version-is-created": Case(
            owner=mdep(version=1, replicas=2),
            versions=[mv(1), mv(2)],
            changes=[("create", "iris", 1), ("create", "iris", None)],
            events=["Created"],
            status={"phase": "Progressing", "replicas": 2, "readyReplicas": 0},
        ),
        "latest-is-the-newest-validated": Case(
            owner=mdep(replicas=2),
            versions=[mv(1), mv(2), mv(3, "Unknown", "Validating"), mv(4, "False", "GatesFailed")],
            changes=[("create", "iris", 2), ("create", "iris", None)],
            events=["Created"],
        ),
        "steady-state-writes-nothing": Case(
            owner=mdep(replicas=2, status=serving_v(2)),
            versions=[mv(1), mv(2)],
            stable=2,
            status={"phase": "Serving", "servedVersion": 2, "readyReplicas": 2},
            ready="True",
        ),
        "rolling-starts-on-a-new-version": Case(
            owner=plain,
            versions=[mv(1), mv(2)],
            stable=1,
            changes=[("replace", "iris", 2)],
            events=["RolloutStarted"],
            status={"phase": "Progressing", "servedVersion": 1},
        ),
        "rolling-completes": Case(
            owner=plain,
            versions=[mv(1), mv(2)],
            stable=2,
            events=["RolloutComplete"],
            status={"phase": "Serving", "servedVersion": 2, "modelVersion": "iris-v2"},
            ready="True",
        ),
        "rolled-back-when-the-new-pods-never-get-ready": Case(
            owner=plain,
            versions=[mv(1), mv(2)],
            stable=deployed(plain, 2, complete=False, deadline=True),
            changes=[("replace", "iris", 1)],
            events=["RolledBack"],
            status={"phase": "Degraded", "servedVersion": 1, "failedVersion": 2},
        ),
        "a-rolled-back-version-is-not-retried-in-its-generation": Case(
            owner=mdep(replicas=2, status=degraded(2, served=1)),
            versions=[mv(1), mv(2)],
            stable=1,
            status={"phase": "Degraded", "servedVersion": 1, "failedVersion": 2},
        ),
        "a-new-generation-retries-the-failed-version": Case(
            owner=mdep(replicas=2, generation=2, status=degraded(2, served=1)),
            versions=[mv(1), mv(2)],
            stable=1,
            changes=[("replace", "iris", 2)],
            events=["RolloutStarted"],
            status={"phase": "Progressing"},
        ),
        "a-first-version-that-never-gets-ready-has-nothing-to-roll-back-to": Case(
            owner=mdep(replicas=2),
            versions=[mv(1)],
            stable=deployed(mdep(), 1, complete=False, deadline=True),
            events=[rollout.DEADLINE_REASON],
            status={"phase": "Degraded", "failedVersion": 1},
        ),
        "canary-starts-beside-the-served-version": Case(
            owner=canary,
            versions=[mv(1), mv(2)],
            stable=1,
            changes=[("patch", "iris", {"spec": {"replicas": 1}}), ("create", "iris-canary", 2)],
            events=["CanaryStarted"],
            status={"phase": "Canary", "servedVersion": 1, "canaryVersion": 2},
        ),
        "canary-waits-until-healthy-long-enough": Case(
            owner=canary,
            versions=[mv(1), mv(2)],
            stable=deployed(canary, 1, replicas=1),
            canary=deployed(canary, 2, track=serving.CANARY, replicas=1, available_for=10),
            status={"phase": "Canary", "canaryVersion": 2},
        ),
        "canary-is-promoted": Case(
            owner=canary,
            versions=[mv(1), mv(2)],
            stable=deployed(canary, 1, replicas=1),
            canary=deployed(canary, 2, track=serving.CANARY, replicas=1, available_for=120),
            changes=[("replace", "iris", 2)],
            events=["Promoting"],
            status={"phase": "Promoting", "canaryVersion": 2},
        ),
        "a-promoted-canary-stays-until-the-stable-rollout-completes": Case(
            owner=canary,
            versions=[mv(1), mv(2)],
            stable=deployed(canary, 2, complete=False),
            canary=deployed(canary, 2, track=serving.CANARY, replicas=1),
            status={"phase": "Promoting", "canaryVersion": 2},
        ),
        "a-promoted-canary-goes-when-the-stable-rollout-completes": Case(
            owner=canary,
            versions=[mv(1), mv(2)],
            stable=2,
            canary=deployed(canary, 2, track=serving.CANARY, replicas=1),
            changes=[("delete", "iris-canary", None)],
            events=["RolloutComplete"],
            status={"phase": "Serving", "servedVersion": 2},
            ready="True",
        ),
        "a-canary-that-never-gets-ready-is-aborted": Case(
            owner=canary,
            versions=[mv(1), mv(2)],
            stable=deployed(canary, 1, replicas=1),
            canary=deployed(canary, 2, track=serving.CANARY, replicas=1, complete=False, deadline=True),
            changes=[("patch", "iris", {"spec": {"replicas": 2}}), ("delete", "iris-canary", None)],
            events=["RolledBack"],
            status={"phase": "Degraded", "servedVersion": 1, "failedVersion": 2},
        ),
        "a-canary-of-a-version-no-longer-wanted-is-removed": Case(
            owner=mdep(replicas=2, status=serving_v(1)),
            versions=[mv(1)],
            stable=1,
            canary=deployed(canary, 2, track=serving.CANARY, replicas=1),
            changes=[("delete", "iris-canary", None)],
            events=["CanaryDeleted"],
            status={"phase": "Serving"},
            ready="True",
        ),
        "a-deleted-latest-version-falls-back-to-the-previous-one": Case(
            owner=mdep(replicas=2, status=serving_v(2)),
            versions=[mv(1)],
            stable=2,
            changes=[("replace", "iris", 1)],
            events=["RolloutStarted"],
            status={"phase": "Progressing", "servedVersion": 2},
        ),
        "scale-up-patches-the-size-only": Case(
            owner=mdep(replicas=3, status=serving_v(1)),
            versions=[mv(1)],
            stable=1,
            changes=[("patch", "iris", {"spec": {"replicas": 3}})],
            status={"phase": "Progressing", "replicas": 3, "readyReplicas": 2},
        ),
        "the-served-version-deleted-while-blocked-still-honours-the-size": Case(
            owner=mdep(replicas=4, status=degraded(2, served=1)),
            versions=[mv(2)],
            stable=1,
            changes=[("patch", "iris", {"spec": {"replicas": 4}})],
            status={"failedVersion": 2, "replicas": 4},
        ),
        "autoscaling-creates-the-hpa-and-leaves-the-size-to-it": Case(
            owner=mdep(autoscaling={"minReplicas": 1, "maxReplicas": 5}, status=serving_v(1)),
            versions=[mv(1)],
            stable=1,
            changes=[("create", "iris", None)],
            status={"phase": "Serving", "replicas": 2},
            ready="True",
        ),
        "autoscaling-removed-deletes-the-hpa": Case(
            owner=mdep(replicas=2, status=serving_v(1)),
            versions=[mv(1)],
            stable=1,
            hpa=True,
            changes=[("delete", "iris", None)],
            ready="True",
        ),
    }


CASES = build_cases()


def summary(change: rollout.Change) -> tuple[str, str, Any]:
    if change.verb == "patch" and change.kind == "Deployment":
        return (change.verb, change.name, change.body)
    if change.kind == "Deployment" and change.body is not None:
        return (change.verb, change.name, rollout.template_version(change.body))
    return (change.verb, change.name, None)


def plan(case: Case) -> rollout.RolloutPlan:
    owner = case.owner
    stable = deployed(owner, case.stable) if isinstance(case.stable, int) else case.stable
    hpa_owner = mdep(autoscaling={"maxReplicas": 3})
    observed = rollout.Observed(
        versions=case.versions,
        stable=stable,
        canary=case.canary,
        service=serving.service(owner, serving.parse_spec(owner))
        if stable is not None
        else None,  # a new one has neither
        hpa=serving.horizontal_pod_autoscaler(hpa_owner, serving.parse_spec(hpa_owner)) if case.hpa else None,
    )
    spec = serving.parse_spec(owner)
    return rollout.plan_rollout(
        owner, spec=spec, observed=observed, now=NOW, settings=SETTINGS, poll_seconds=5.0
    )


@pytest.mark.parametrize("name", list(CASES), ids=list(CASES))
def test_plan_rollout(name: str) -> None:
    case = CASES[name]
    result = plan(case)
    assert [summary(c) for c in result.changes] == case.changes
    assert [e.reason for e in result.outcome.events] == case.events
    status = result.outcome.status
    assert {k: status.get(k) for k in case.status} == case.status
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == case.ready


def test_a_rolled_back_version_reports_degraded_and_stalled_with_the_reason() -> None:
    status = plan(CASES["rolled-back-when-the-new-pods-never-get-ready"]).outcome.status
    by_type = {c["type"]: c for c in status["conditions"]}
    assert by_type["Degraded"]["status"] == by_type["Stalled"]["status"] == "True"
    assert by_type["Stalled"]["reason"] == rollout.DEADLINE_REASON
    assert "rolled back to version 1" in by_type["Degraded"]["message"]
    assert [(h["version"], h["outcome"]) for h in status["history"]][-1] == (2, "RolledBack")


def test_a_canary_waiting_to_be_promoted_looks_again_when_it_is_due() -> None:
    result = plan(CASES["canary-waits-until-healthy-long-enough"])
    assert result.outcome.requeue_after == pytest.approx(50)


@pytest.mark.parametrize(
    ("owner", "versions", "reason"),
    [
        (mdep(version=4), [mv(4, "False", "GatesFailed")], "VersionRejected"),
        (mdep(version=3), [mv(1), mv(2)], "ModelVersionNotFound"),
        (mdep(), [mv(1, "Unknown", "Validating")], "NoValidatedVersion"),
        (mdep(), [], "NoValidatedVersion"),
    ],
    ids=["rejected-version", "deleted-or-missing-version", "nothing-validated-yet", "no-version-at-all"],
)
def test_versions_that_cannot_be_served_stall(
    owner: dict[str, Any], versions: list[Any], reason: str
) -> None:
    with pytest.raises(Stalled) as caught:
        plan(Case(owner=owner, versions=versions))
    assert caught.value.reason == reason


def test_a_pinned_version_still_validating_is_waited_for_without_writes() -> None:
    result = plan(Case(owner=mdep(version=2), versions=[mv(1), mv(2, "Unknown", "Validating")], stable=1))
    assert result.changes == []
    assert result.outcome.status["phase"] == "WaitingForValidation"
    assert result.outcome.requeue_after == 5.0


def test_children_carry_the_owner_label() -> None:
    result = plan(CASES["pinned-version-is-created"])
    for change in result.changes:
        assert change.body is not None
        assert change.body["metadata"]["labels"][meta.OWNER] == "iris"


@pytest.mark.parametrize(
    ("replicas", "weight", "stable", "canary", "share"),
    [(3, 10, 2, 1, 33), (10, 10, 9, 1, 10), (4, 50, 2, 2, 50), (1, 30, 1, 1, 50)],
)
def test_a_canary_takes_its_share_from_the_stable_pods(
    replicas: int, weight: int, stable: int, canary: int, share: int
) -> None:
    strategy = {"type": "Canary", "canary": {"weight": weight}}
    owner = mdep(replicas=replicas, strategy=strategy, status=serving_v(1))
    result = plan(Case(owner=owner, versions=[mv(1), mv(2)], stable=deployed(owner, 1, replicas=replicas)))
    sizes = {
        change.name: (change.body or {}).get("spec", {}).get("replicas")
        for change in result.changes
        if change.kind == "Deployment"
    }
    assert sizes == (
        {"iris-canary": canary} if stable == replicas else {"iris": stable, "iris-canary": canary}
    )
    assert result.outcome.status["canaryShare"] == share
    assert f"{share}% of the serving pods" in result.outcome.events[0].message


def test_an_autoscaled_stable_keeps_its_size_and_the_canary_is_added() -> None:
    owner = mdep(strategy={"type": "Canary", "canary": {"weight": 25}}, autoscaling={"maxReplicas": 9})
    owner["status"] = serving_v(1)
    result = plan(Case(owner=owner, versions=[mv(1), mv(2)], stable=deployed(owner, 1, replicas=6), hpa=True))
    [canary] = [c for c in result.changes if c.kind == "Deployment"]
    assert (canary.name, canary.body["spec"]["replicas"]) == ("iris-canary", 2)  # type: ignore[index]
    assert result.outcome.status["canaryShare"] == 25
