"""Helpers for the controller tests: the ModelCycle objects of one namespace, waits, and manifests.

`Objects` wraps the API for one namespace: create/get/list/patch/delete the five kinds, Jobs,
Pods and Events, and wait for conditions. The `objects` fixture gives one for a fresh namespace
labelled `pod-security.kubernetes.io/enforce=restricted`, so every pod the operator creates there
is admitted only if it passes the restricted Pod Security Standard.
"""

from __future__ import annotations

import builtins
import contextlib
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from modelcycle import API_VERSION, GROUP, VERSION
from modelcycle.api import kinds
from support.cluster import RESTRICTED_NAMESPACE, NamespaceFactory, condition, wait_for

PLURALS = {k.kind: k.plural for k in kinds.ALL}
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"


class Objects:
    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.api = api
        self.namespace = namespace
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.batch = client.BatchV1Api(api)

    def _dict(self, obj: Any) -> dict[str, Any]:
        return dict(self.api.sanitize_for_serialization(obj))

    # ------------------------------------------------------------------ the five kinds

    def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        plural = PLURALS[manifest["kind"]]
        created = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, plural, manifest
        )
        return cast(dict[str, Any], created)

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        try:
            found = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURALS[kind], name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return cast(dict[str, Any], found)

    def list(self, kind: str, label_selector: str | None = None) -> builtins.list[dict[str, Any]]:
        result = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURALS[kind], label_selector=label_selector or ""
        )
        return list(cast(dict[str, Any], result)["items"])

    def patch(self, kind: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        patched = self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURALS[kind], name, patch
        )
        return cast(dict[str, Any], patched)

    def delete(self, kind: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURALS[kind], name, propagation_policy="Background"
        )

    # ------------------------------------------------------------------ built-in kinds

    def jobs(self, label_selector: str | None = None) -> builtins.list[dict[str, Any]]:
        items = self.batch.list_namespaced_job(self.namespace, label_selector=label_selector or "").items
        return sorted((self._dict(j) for j in items), key=lambda j: j["metadata"]["name"])

    def job(self, name: str) -> dict[str, Any] | None:
        return next((j for j in self.jobs() if j["metadata"]["name"] == name), None)

    def pods(self, job: str | None = None) -> builtins.list[dict[str, Any]]:
        selector = f"{JOB_NAME_LABEL}={job}" if job else ""
        return [
            self._dict(p)
            for p in self.core.list_namespaced_pod(self.namespace, label_selector=selector).items
        ]

    def events(self, *, name: str | None = None, reason: str | None = None) -> builtins.list[dict[str, Any]]:
        found = []
        for event in self.core.list_namespaced_event(self.namespace).items:
            data = self._dict(event)
            if name is not None and data["involvedObject"].get("name") != name:
                continue
            if reason is not None and data.get("reason") != reason:
                continue
            found.append(data)
        return found

    # ------------------------------------------------------------------ waiting

    def wait(
        self,
        kind: str,
        name: str,
        check: Callable[[dict[str, Any]], bool],
        *,
        timeout: float = 90,
        what: str = "",
    ) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            obj = self.get(kind, name)
            return obj if obj is not None and check(obj) else None

        try:
            return dict(wait_for(probe, timeout=timeout, what=what or f"{kind} {name}"))
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; last seen: {(self.get(kind, name) or {}).get('status')}") from None

    def wait_condition(
        self,
        kind: str,
        name: str,
        type_: str,
        status: str = "True",
        *,
        reason: str | None = None,
        timeout: float = 90,
    ) -> dict[str, Any]:
        def check(obj: dict[str, Any]) -> bool:
            found = condition(obj, type_)
            return found.get("status") == status and (reason is None or found.get("reason") == reason)

        what = f"{kind} {name} {type_}={status}" + (f" ({reason})" if reason else "")
        return self.wait(kind, name, check, timeout=timeout, what=what)

    def wait_job(self, name: str, *, timeout: float = 60) -> dict[str, Any]:
        return dict(wait_for(lambda: self.job(name), timeout=timeout, interval=0.05, what=f"Job {name}"))

    def wait_job_finished(self, name: str, *, timeout: float = 90) -> dict[str, Any]:
        def finished() -> dict[str, Any] | None:
            job = self.job(name)
            types = {
                c["type"]
                for c in ((job or {}).get("status") or {}).get("conditions") or []
                if c["status"] == "True"
            }
            return job if types & {"Complete", "Failed"} else None

        return dict(wait_for(finished, timeout=timeout, what=f"Job {name} finished"))


# --------------------------------------------------------------------------- manifests


def dataset_manifest(name: str = "iris", *, builtin: str = "iris", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Dataset",
        "metadata": {"name": name},
        "spec": {"source": {"builtin": {"name": builtin}}, "target": "target", **spec},
    }


def training_run_manifest(
    name: str, *, dataset: str = "iris", model: str = "iris", **spec: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "datasetRef": {"name": dataset},
        "model": {"name": model},
        "estimator": {"class": "sklearn.linear_model.LogisticRegression", "params": {"max_iter": 300}},
        "split": {"testFraction": 0.2, "seed": 42},
        "gates": {"min": {"accuracy": 0.8}},
    }
    body.update(spec)
    return {"apiVersion": API_VERSION, "kind": "TrainingRun", "metadata": {"name": name}, "spec": body}


# --------------------------------------------------------------------------- kubectl

KubectlSeesReady = Callable[[str], contextlib.AbstractContextManager[None]]


@pytest.fixture
def kubectl_sees_ready(kubectl: Path, kubeconfig: Path, objects: Objects) -> KubectlSeesReady:
    """`with kubectl_sees_ready("dataset/iris"): ...` starts `kubectl wait --for=condition=Ready` on
    that resource of the `objects` namespace before the block, and requires it to succeed after.

    What a user's script does; it proves the Ready condition is one kubectl understands."""

    @contextlib.contextmanager
    def waiting(resource: str) -> Iterator[None]:
        process = subprocess.Popen(
            [
                str(kubectl),
                "wait",
                "--for=condition=Ready",
                resource,
                "-n",
                objects.namespace,
                "--timeout=60s",
                f"--kubeconfig={kubeconfig}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            yield
            output, _ = process.communicate(timeout=90)
        finally:
            # A failed block leaves no kubectl behind.
            if process.poll() is None:
                process.kill()
                process.communicate()
        assert process.returncode == 0, f"kubectl wait for {resource} Ready failed:\n{output}"

    return waiting


def eventually(check: Callable[[], Any], *, timeout: float = 60, what: str = "condition") -> Any:
    return wait_for(check, timeout=timeout, what=what)


def stays(check: Callable[[], bool], *, seconds: float, interval: float = 0.25) -> bool:
    """True if `check()` holds every time it is polled for `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not check():
            return False
        time.sleep(interval)
    return True


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def objects(api_client: client.ApiClient, new_namespace: NamespaceFactory) -> Objects:
    """The objects of a fresh namespace that enforces Pod Security `restricted`."""
    return Objects(api_client, new_namespace(labels=RESTRICTED_NAMESPACE))


# --------------------------------------------------------------------------- common steps


def data_job_name(objects: Objects, dataset: str, *, timeout: float = 60) -> str:
    """The name of the Dataset's current data Job, once the operator has recorded it."""
    obj = objects.wait(
        "Dataset",
        dataset,
        lambda o: bool((o.get("status") or {}).get("jobName")),
        timeout=timeout,
        what=f"Dataset {dataset} to start its data Job",
    )
    return str(obj["status"]["jobName"])


def ready_dataset(objects: Objects, kubelet: Any, name: str = "iris", **spec: Any) -> dict[str, Any]:
    """Create a Dataset, run its data Job, and wait until it is Ready."""
    objects.create(dataset_manifest(name, **spec))
    job = data_job_name(objects, name)
    kubelet.complete(objects.namespace, job)
    return objects.wait_condition("Dataset", name, "Ready")


def trained_run(objects: Objects, kubelet: Any, name: str, **spec: Any) -> dict[str, Any]:
    """Create a TrainingRun (its Dataset must exist), run its training Job, wait until it is Ready."""
    objects.create(training_run_manifest(name, **spec))
    objects.wait_job(f"{name}-train")
    kubelet.complete(objects.namespace, f"{name}-train")
    return objects.wait_condition("TrainingRun", name, "Ready")


def wait_for_added(list_fn: Callable[..., Any], *args: Any, name: str, timeout: float = 60) -> dict[str, Any]:
    """Block on a watch until the object `name` is added (or already exists); return it at once.

    Used to act the moment the operator creates something (e.g. SIGKILL it right then)."""
    from kubernetes import watch

    stream = watch.Watch()
    try:
        for event in stream.stream(list_fn, *args, timeout_seconds=int(timeout)):
            obj = event["object"]
            data = obj if isinstance(obj, dict) else obj.to_dict()
            metadata = data.get("metadata") or {}
            if metadata.get("name") == name and event["type"] in ("ADDED", "MODIFIED"):
                return dict(data)
    finally:
        stream.stop()
    raise TimeoutError(f"{name} did not appear within {timeout:.0f}s")
