"""A fake kubelet for the integration tier: run a Job's pod here, on demand, and report it as a kubelet would.

The integration control plane has no node, so the pods of the operator's Jobs stay Pending. This
helper finishes them when a test says so:

1. it runs the pod's container locally: `command` + `args` exactly as the operator wrote them
   (`modelcycle ...` runs in this interpreter, `in_process=True`, which saves seconds of imports
   per Job; or as `python -m modelcycle ...` in a subprocess), with the container's environment,
   and each volume mount mapped to a local directory (emptyDir: a fresh directory; a
   PersistentVolumeClaim: `<root>/pvc/<claimName>`, so the artifact claim is one store shared by
   every Job of the session; a ConfigMap: its keys as files); the mount paths in arguments and
   environment values, and the termination-message path, are rewritten to those directories;
2. it patches the Pod's status through the `pods/status` subresource, as the kubelet does:
   phase Succeeded or Failed, and the container's `state.terminated` with the exit code and the
   termination message (the result JSON the workload wrote). The Job controller then counts the
   pod and completes or fails the Job. (Patching the status of a pod no scheduler bound works:
   the API server does not care who reports it.)

So the operator under test reads real workload results, produced from the very arguments it put
in the Job, without any node.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
MAX_MESSAGE = 4096


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Completion:
    """What running one pod gave."""

    pod: str
    exit_code: int
    message: str
    stdout: str = ""
    stderr: str = ""
    result: dict[str, Any] = field(default_factory=dict)


class FakeKubelet:
    def __init__(self, api: client.ApiClient, root: Path, *, in_process: bool = True) -> None:
        self.api = api
        self.in_process = in_process
        self.core = client.CoreV1Api(api)
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ finding pods

    def pods(self, namespace: str, job: str) -> list[dict[str, Any]]:
        items = self.core.list_namespaced_pod(namespace, label_selector=f"{JOB_NAME_LABEL}={job}").items
        return [self.api.sanitize_for_serialization(p) for p in items]

    def pending_pod(self, namespace: str, job: str, *, timeout: float = 60) -> dict[str, Any]:
        """The Job's pod that has not finished yet (the Job controller creates it shortly after the Job)."""
        deadline = time.monotonic() + timeout
        while True:
            for pod in self.pods(namespace, job):
                if (pod.get("status") or {}).get("phase") in (None, "Pending", "Running") and not pod[
                    "metadata"
                ].get("deletionTimestamp"):
                    return pod
            if time.monotonic() > deadline:
                raise TimeoutError(f"no unfinished pod of Job {namespace}/{job} after {timeout:.0f}s")
            time.sleep(0.2)

    def store(self, claim: str = "modelcycle-artifacts") -> Path:
        """The local directory standing in for a PersistentVolumeClaim (the artifact store by default)."""
        path = self.root / "pvc" / claim
        path.mkdir(parents=True, exist_ok=True)
        return path

    # ------------------------------------------------------------------ running

    def _volume_dirs(self, pod: dict[str, Any], workdir: Path) -> dict[str, Path]:
        namespace = pod["metadata"]["namespace"]
        dirs: dict[str, Path] = {}
        for volume in pod["spec"].get("volumes") or []:
            name = volume["name"]
            if "persistentVolumeClaim" in volume:
                dirs[name] = self.store(volume["persistentVolumeClaim"]["claimName"])
            elif "configMap" in volume:
                target = workdir / "volumes" / name
                target.mkdir(parents=True, exist_ok=True)
                data = self.core.read_namespaced_config_map(volume["configMap"]["name"], namespace).data or {}
                items = volume["configMap"].get("items") or [{"key": k, "path": k} for k in data]
                for item in items:
                    if item["key"] in data:
                        (target / item["path"]).write_text(data[item["key"]])
                dirs[name] = target
            else:  # emptyDir and anything else: a fresh directory
                target = workdir / "volumes" / name
                target.mkdir(parents=True, exist_ok=True)
                dirs[name] = target
        return dirs

    @staticmethod
    def _rewrite(value: str, paths: list[tuple[str, str]]) -> str:
        for container_path, local in paths:
            if value == container_path or value.startswith(container_path.rstrip("/") + "/"):
                return local + value[len(container_path) :]
        return value

    def run(self, pod: dict[str, Any], *, timeout: float = 300) -> Completion:
        """Run the pod's (first) container here and return what it did; reports nothing."""
        container = pod["spec"]["containers"][0]
        workdir = Path(tempfile.mkdtemp(prefix=f"{pod['metadata']['name']}-", dir=self.root))
        dirs = self._volume_dirs(pod, workdir)
        termination_log = workdir / "termination-log"
        termination_log.touch()
        paths = [(container.get("terminationMessagePath") or "/dev/termination-log", str(termination_log))]
        for mount in container.get("volumeMounts") or []:
            paths.append((mount["mountPath"], str(dirs[mount["name"]])))
        paths.sort(key=lambda pair: len(pair[0]), reverse=True)

        env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBECONFIG", "MODELCYCLE_"))}
        for var in container.get("env") or []:
            if "value" in var:
                env[var["name"]] = self._rewrite(str(var["value"]), paths)
            elif field_ref := (var.get("valueFrom") or {}).get("fieldRef"):
                key = field_ref["fieldPath"].split(".", 1)[1]
                env[var["name"]] = str(pod["metadata"].get(key, ""))
        command = list(container.get("command") or [])
        argv = [self._rewrite(str(a), paths) for a in [*command, *(container.get("args") or [])]]
        if self.in_process and argv[:1] == ["modelcycle"]:
            returncode, stdout, stderr = self._run_in_process(argv[1:], env, container.get("env") or [])
        else:
            if argv[:1] == ["modelcycle"]:
                argv = [sys.executable, "-m", "modelcycle", *argv[1:]]
            done = subprocess.run(argv, env=env, cwd=workdir, capture_output=True, text=True, timeout=timeout)
            returncode, stdout, stderr = done.returncode, done.stdout, done.stderr
        message = termination_log.read_text()
        if not message and returncode != 0:  # terminationMessagePolicy: FallbackToLogsOnError
            message = (stdout + stderr)[-2048:]
        try:
            result = json.loads(message) if message else {}
        except ValueError:
            result = {}
        return Completion(
            pod=pod["metadata"]["name"],
            exit_code=returncode,
            message=message[:MAX_MESSAGE],
            stdout=stdout,
            stderr=stderr,
            result=result if isinstance(result, dict) else {},
        )

    @staticmethod
    def _run_in_process(
        args: list[str], env: dict[str, str], declared: list[dict[str, Any]]
    ) -> tuple[int, str, str]:
        """`modelcycle <args>` in this interpreter (saves the imports of a new one, seconds per Job).

        Only the variables the container declares are set, for the duration of the call."""
        from modelcycle import cli

        names = [v["name"] for v in declared if v["name"] in env and v["name"] != "HOME"]
        saved = {name: os.environ.get(name) for name in names}
        out, err = io.StringIO(), io.StringIO()
        try:
            os.environ.update({name: env[name] for name in names})
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code = cli.main(args)
                except SystemExit as exc:  # argparse
                    code = exc.code if isinstance(exc.code, int) else 2
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        return int(code), out.getvalue(), err.getvalue()

    def report(self, pod: dict[str, Any], *, exit_code: int, message: str) -> None:
        """Patch the pod's status as the kubelet does when its only container has terminated."""
        container = pod["spec"]["containers"][0]
        stamp = _now()
        status = {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "startTime": stamp,
            "containerStatuses": [
                {
                    "name": container["name"],
                    "image": container["image"],
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "started": False,
                    "state": {
                        "terminated": {
                            "exitCode": exit_code,
                            "reason": "Completed" if exit_code == 0 else "Error",
                            "message": message[:MAX_MESSAGE],
                            "startedAt": stamp,
                            "finishedAt": stamp,
                        }
                    },
                }
            ],
        }
        self.core.patch_namespaced_pod_status(
            pod["metadata"]["name"], pod["metadata"]["namespace"], {"status": status}
        )

    # ------------------------------------------------------------------ what tests call

    def complete(
        self, namespace: str, job: str, *, timeout: float = 60, expect_exit: int | None = 0
    ) -> Completion:
        """Run the Job's pending pod here and report the outcome; the Job controller does the rest."""
        pod = self.pending_pod(namespace, job, timeout=timeout)
        done = self.run(pod)
        if expect_exit is not None and done.exit_code != expect_exit:
            raise AssertionError(
                f"pod {done.pod} of Job {job} exited {done.exit_code}, expected {expect_exit}\n"
                f"message: {done.message}\nstderr: {done.stderr[-3000:]}"
            )
        self.report(pod, exit_code=done.exit_code, message=done.message)
        return done

    def complete_with(
        self, namespace: str, job: str, message: str, *, exit_code: int = 0, timeout: float = 60
    ) -> None:
        """Report the Job's pending pod as finished with a given termination message (a result
        computed earlier for the same arguments), without running it again."""
        self.report(self.pending_pod(namespace, job, timeout=timeout), exit_code=exit_code, message=message)

    def fail(
        self,
        namespace: str,
        job: str,
        *,
        exit_code: int = 1,
        result: dict[str, Any] | None = None,
        timeout: float = 60,
    ) -> None:
        """Report the Job's pending pod as failed without running it."""
        pod = self.pending_pod(namespace, job, timeout=timeout)
        document = (
            result if result is not None else {"ok": False, "reason": "InternalError", "message": "boom"}
        )
        self.report(pod, exit_code=exit_code, message=json.dumps(document))


@pytest.fixture(scope="session")
def kubelet(api_client: client.ApiClient, tmp_path_factory: pytest.TempPathFactory) -> FakeKubelet:
    """The fake kubelet. One per session, so its artifact store (content-addressed snapshots, and
    models under their namespace) is shared, and results computed once stay valid."""
    return FakeKubelet(api_client, tmp_path_factory.mktemp("kubelet"))
