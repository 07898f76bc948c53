"""Controller logic without a cluster: job results, registration races, production lookup, RBAC."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelcycle.api import conditions, kinds
from modelcycle.builders import modelversions
from modelcycle.controllers import dataset, kube, modelversion, rbac, registry, runtime, trainingrun, workload

SHA = "b" * 64


class FakeClient:
    """The few kube.Client verbs the controllers use, over a dict; `on_create` can inject races."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.on_create: list[Any] = []
        self.creates = 0

    def add(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.objects[(obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])] = obj
        return obj

    def get_or_none(self, *, kind: str, namespace: str, name: str, api_version: str | None = None) -> Any:
        return self.objects.get((kind, namespace, name))

    def list(
        self, *, kind: str, namespace: str, label_selector: str | None = None, api_version: str | None = None
    ) -> list[dict[str, Any]]:
        wanted = dict(part.split("=", 1) for part in (label_selector or "").split(",") if part)
        return [
            o
            for (k, ns, _), o in sorted(self.objects.items())
            if k == kind
            and ns == namespace
            and all((o["metadata"].get("labels") or {}).get(key) == value for key, value in wanted.items())
        ]

    def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        self.creates += 1
        if self.on_create:
            self.on_create.pop(0)(self)
        key = (manifest["kind"], manifest["metadata"]["namespace"], manifest["metadata"]["name"])
        if key in self.objects:
            raise kube.Conflict(409, "AlreadyExists", "{}")
        return self.add(json.loads(json.dumps(manifest)))

    def delete(self, *, kind: str, namespace: str, name: str, **_: Any) -> None:
        self.objects.pop((kind, namespace, name), None)


def run(name: str = "r1", uid: str = "uid-r1", model: str = "iris") -> dict[str, Any]:
    return {
        "apiVersion": "modelcycle.io/v1alpha1",
        "kind": "TrainingRun",
        "metadata": {"name": name, "namespace": "ns", "uid": uid, "generation": 1},
        "spec": {
            "datasetRef": {"name": "iris"},
            "model": {"name": model},
            "estimator": {"class": "sklearn.tree.DecisionTreeClassifier"},
        },
    }


def job(annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "kind": "Job",
        "metadata": {
            "name": "r1-train",
            "namespace": "ns",
            "uid": "job-uid",
            "annotations": annotations or {},
        },
        "spec": {"template": {"spec": {"containers": [{"image": "img:1"}]}}},
    }


RESULT = {"ok": True, "artifact": {"uri": "pvc://m", "sha256": SHA}, "metrics": {"accuracy": 0.9}}


def version(name: str, model: str, number: int, run_uid: str | None = None) -> dict[str, Any]:
    labels = {modelversions.TRAINING_RUN_UID: run_uid} if run_uid else {}
    return {
        "kind": "ModelVersion",
        "metadata": {"name": name, "namespace": "ns", "labels": labels},
        "spec": {"model": model, "version": number},
    }


# --------------------------------------------------------------------------- registration


def test_register_takes_the_next_free_number() -> None:
    client = FakeClient()
    client.add(version("iris-v1", "iris", 1, "someone"))
    client.add(version("wine-v5", "wine", 5, "else"))
    created = trainingrun.register(client, run(), job(), RESULT)  # type: ignore[arg-type]
    assert created["metadata"]["name"] == "iris-v2" and created["spec"]["version"] == 2


def test_register_loses_a_race_for_a_number_and_takes_the_next() -> None:
    client = FakeClient()
    # Between our list and our create, another run takes iris-v1.
    client.on_create.append(lambda c: c.add(version("iris-v1", "iris", 1, "other-run")))
    created = trainingrun.register(client, run(), job(), RESULT)  # type: ignore[arg-type]
    assert created["metadata"]["name"] == "iris-v2"
    assert created["metadata"]["labels"][modelversions.TRAINING_RUN_UID] == "uid-r1"


def test_register_adopts_a_conflicting_version_that_is_its_own() -> None:
    client = FakeClient()
    # Our own earlier create went through although we never saw the answer.
    client.on_create.append(lambda c: c.add(version("iris-v1", "iris", 1, "uid-r1")))
    adopted = trainingrun.register(client, run(), job(), RESULT)  # type: ignore[arg-type]
    assert adopted["metadata"]["name"] == "iris-v1"
    assert [k[2] for k in client.objects] == ["iris-v1"]


def test_register_never_creates_a_second_version_for_one_run() -> None:
    client = FakeClient()
    client.add(version("iris-v7", "iris", 7, "uid-r1"))
    found = trainingrun.register(client, run(), job(), RESULT)  # type: ignore[arg-type]
    assert found["metadata"]["name"] == "iris-v7" and client.creates == 0


def test_register_records_what_the_job_was_given() -> None:
    client = FakeClient()
    given = job(
        {
            "modelcycle.io/dataset-uri": "pvc://d",
            "modelcycle.io/dataset-sha256": SHA,
            "modelcycle.io/profile-uri": "pvc://p",
        }
    )
    created = trainingrun.register(client, run(), given, RESULT)  # type: ignore[arg-type]
    lineage = created["spec"]["lineage"]
    assert (lineage["datasetUri"], lineage["datasetSha256"], lineage["profileUri"]) == (
        "pvc://d",
        SHA,
        "pvc://p",
    )
    assert lineage["image"] == "img:1"


# --------------------------------------------------------------------------- results


def pod(phase: str, *, message: str, finished: str, exit_code: int = 0) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"p-{finished}",
            "creationTimestamp": finished,
            "labels": {workload.CONTROLLER_UID_LABEL: "job-uid"},
        },
        "status": {
            "phase": phase,
            "containerStatuses": [
                {"state": {"terminated": {"exitCode": exit_code, "message": message, "finishedAt": finished}}}
            ],
        },
    }


def finished_job(type_: str, reason: str = "", message: str = "") -> dict[str, Any]:
    return {
        "kind": "Job",
        "metadata": {"name": "j", "namespace": "ns", "uid": "job-uid"},
        "status": {
            "conditions": [
                {"type": "SuccessCriteriaMet", "status": "True"},
                {"type": type_, "status": "True", "reason": reason, "message": message},
            ]
        },
    }


class PodsClient(FakeClient):
    def __init__(self, pods: list[dict[str, Any]]) -> None:
        super().__init__()
        self.pods = pods

    def list(
        self, *, kind: str, namespace: str, label_selector: str | None = None, api_version: str | None = None
    ) -> list[dict[str, Any]]:
        assert kind == "Pod" and label_selector == f"{workload.CONTROLLER_UID_LABEL}=job-uid"
        return self.pods


def test_a_running_job_has_no_result_yet() -> None:
    assert workload.read_result(PodsClient([]), {"metadata": {}, "status": {"active": 1}}).state == "Running"  # type: ignore[arg-type]


def test_the_result_of_a_succeeded_job_is_its_pods_termination_message() -> None:
    client = PodsClient(
        [pod("Succeeded", message='{"ok": true, "sha256": "x"}', finished="2024-01-01T00:00:02Z")]
    )
    done = workload.read_result(client, finished_job("Complete"))  # type: ignore[arg-type]
    assert done.state == "Succeeded" and done.result == {"ok": True, "sha256": "x"}


def test_a_failed_job_reports_the_last_attempts_reason_and_exit_code() -> None:
    client = PodsClient(
        [
            pod(
                "Failed",
                message='{"ok": false, "reason": "SourceUnavailable", "message": "late"}',
                finished="2024-01-01T00:00:09Z",
                exit_code=3,
            ),
            pod(
                "Failed",
                message='{"ok": false, "reason": "Early", "message": "early"}',
                finished="2024-01-01T00:00:01Z",
                exit_code=1,
            ),
        ]
    )
    done = workload.read_result(client, finished_job("Failed", "BackoffLimitExceeded", "too many"))  # type: ignore[arg-type]
    assert (done.state, done.reason, done.message, done.exit_code) == (
        "Failed",
        "SourceUnavailable",
        "late",
        3,
    )
    assert workload.is_transient(done)


def test_a_failed_job_without_a_json_message_reports_the_log_tail_or_the_jobs_reason() -> None:
    client = PodsClient([pod("Failed", message="Traceback ...\nKeyError: x", finished="t", exit_code=137)])
    done = workload.read_result(client, finished_job("Failed", "BackoffLimitExceeded", "limit"))  # type: ignore[arg-type]
    assert done.reason == "WorkloadFailed" and "KeyError" in done.message and not workload.is_transient(done)
    bare = workload.read_result(PodsClient([]), finished_job("Failed", "DeadlineExceeded", "too slow"))  # type: ignore[arg-type]
    assert (bare.reason, bare.message) == ("DeadlineExceeded", "too slow")


def test_stalled_outcome_announces_once() -> None:
    obj = {"metadata": {"generation": 2}, "status": {}}
    first = runtime.stalled_outcome(
        obj, reason="Bad", message="m", extra=((conditions.VALIDATED, False, "Bad", "m"),)
    )
    assert [e.type for e in first.events] == ["Warning"]
    types = {c["type"]: c["status"] for c in first.status["conditions"]}
    assert types == {"Stalled": "True", "Ready": "False", "Validated": "False"}
    again = runtime.stalled_outcome({**obj, "status": first.status}, reason="Bad", message="m")
    assert again.events == []


# --------------------------------------------------------------------------- production, refresh


def test_production_is_the_served_version_of_the_same_model_with_its_validated_metrics() -> None:
    client = FakeClient()
    for name, model, served in (("a", "iris", 1), ("b", "iris", 2), ("c", "wine", 9), ("d", "iris", None)):
        client.add(
            {
                "kind": "ModelDeployment",
                "metadata": {"name": name, "namespace": "ns"},
                "spec": {"model": model},
                "status": {"servedVersion": served} if served else {},
            }
        )
    v2 = version("iris-v2", "iris", 2)
    v2["status"] = {"metrics": {"accuracy": 0.93}}
    v2["spec"]["metrics"] = {"accuracy": 0.5}
    client.add(v2)
    candidate = version("iris-v3", "iris", 3)
    assert modelversion.production(client, candidate) == (2, {"accuracy": 0.93})  # type: ignore[arg-type]
    assert modelversion.production(client, version("wine-v10", "wine", 10)) is None  # type: ignore[arg-type]
    # A version is never compared with itself.
    # Never compared with itself: for v2 that leaves v1, whose ModelVersion is gone here.
    assert modelversion.production(client, version("iris-v2", "iris", 2)) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("source", "expected"),
    [({"traffic": {"deployment": "iris"}}, True), ({"builtin": {"name": "iris"}}, False), (None, False)],
    ids=["traffic-dataset", "other-dataset", "no-dataset"],
)
def test_the_champion_artifact_is_passed_only_for_a_version_trained_on_traffic(
    source: dict[str, Any] | None, expected: bool
) -> None:
    client = FakeClient()
    if source is not None:
        client.add(
            {"kind": "Dataset", "metadata": {"name": "recent", "namespace": "ns"}, "spec": {"source": source}}
        )
    champion = version("iris-v2", "iris", 2)
    champion["spec"]["artifact"] = {"uri": "pvc://models/ns/iris/v2/model.skops", "sha256": SHA}
    client.add(champion)
    candidate = version("iris-v3", "iris", 3)
    candidate["spec"]["lineage"] = {"dataset": "recent"}
    found = modelversion.champion_artifact(client, candidate, (2, {"accuracy": 0.9}))  # type: ignore[arg-type]
    assert found == ({"uri": "pvc://models/ns/iris/v2/model.skops", "sha256": SHA} if expected else None)
    assert modelversion.champion_artifact(client, candidate, None) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(("now", "epoch", "wait"), [(0.0, 0, 61.0), (59.5, 0, 1.5), (120.0, 2, 61.0)])
def test_refresh_epochs(now: float, epoch: int, wait: float) -> None:
    spec = {"refreshSeconds": 60}
    assert dataset.refresh_epoch(spec, now) == epoch
    assert dataset.seconds_to_next_epoch(spec, now) == pytest.approx(wait)
    assert dataset.refresh_epoch({}, now) is None and dataset.seconds_to_next_epoch({}, now) is None


# --------------------------------------------------------------------------- RBAC


def test_every_controller_declares_its_rules_and_nothing_is_wildcarded() -> None:
    declared = rbac.controller_rules()
    assert set(declared) == {kind.kind for kind in kinds.ALL}  # one controller per kind, each with rules
    assert all(declared.values())
    for rules in [*declared.values(), rbac.RUNTIME_RULES, rbac.cluster_role(peering=True)["rules"]]:
        for rule in rules:
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[key], rule


def test_the_cluster_role_covers_what_the_runtime_and_these_controllers_call() -> None:
    allowed = {
        (group, resource, verb)
        for rule in rbac.cluster_role()["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    needed = {
        ("", "events", "create"),
        ("", "pods", "list"),
        ("batch", "jobs", "create"),
        ("batch", "jobs", "get"),
        ("batch", "jobs", "list"),
        ("batch", "jobs", "watch"),
        ("batch", "jobs", "delete"),
        ("modelcycle.io", "datasets", "get"),
        ("modelcycle.io", "datasets/status", "patch"),
        ("modelcycle.io", "trainingruns/status", "patch"),
        ("modelcycle.io", "modelversions/status", "patch"),
        ("modelcycle.io", "modelversions", "create"),
        ("modelcycle.io", "modelversions", "list"),
        ("modelcycle.io", "modeldeployments", "list"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
    }
    assert needed <= allowed, needed - allowed
    # The operator never writes a user's spec: no update or patch of the five kinds themselves.
    for plural in ("datasets", "trainingruns", "modelversions"):
        assert ("modelcycle.io", plural, "patch") not in allowed
        assert ("modelcycle.io", plural, "update") not in allowed


def test_merge_unions_verbs_per_resource() -> None:
    merged = rbac.merge(
        [
            {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get"]},
            {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get"]},
            {"apiGroups": [""], "resources": ["pods", "events"], "verbs": ["list"]},
        ]
    )
    assert merged == [
        {"apiGroups": [""], "resources": ["events", "pods"], "verbs": ["list"]},
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "create"]},
    ]


def test_reconcilers_are_registered_with_their_dependents() -> None:
    assert registry.REGISTRY["Dataset"].dependents == ("TrainingRun", "ModelVersion")
    assert registry.REGISTRY["ModelVersion"].dependents == ("ModelDeployment",)
    assert registry.REGISTRY["TrainingRun"].reconcile is trainingrun.reconcile
    assert registry.REGISTRY["TrainingRun"].rbac_rules == tuple(trainingrun.RBAC_RULES)


@pytest.mark.parametrize(
    ("status", "started"),
    [
        pytest.param({}, False, id="just-created"),
        pytest.param({"startTime": "2026-12-03T10:00:00Z", "active": 1, "ready": 0}, False, id="pod-pending"),
        pytest.param({"startTime": "2026-12-03T10:00:00Z", "active": 1, "ready": 1}, True, id="pod-running"),
        pytest.param({"startTime": "2026-12-03T10:00:00Z", "failed": 1, "active": 1}, True, id="a-retry"),
        pytest.param(
            {"startTime": "2026-12-03T10:00:00Z", "conditions": [{"type": "Complete", "status": "True"}]},
            True,
            id="complete",
        ),
    ],
)
def test_a_job_has_started_training_once_a_pod_runs_or_finished(
    status: dict[str, Any], started: bool
) -> None:
    job = {"metadata": {"name": "iris-train", "namespace": "ml", "uid": "j"}, "status": status}
    assert workload.pods_started(job) is started
