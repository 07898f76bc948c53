"""The operator under test: `python -m modelcycle operator` as a subprocess, killable and restartable.

`OperatorProcess` starts the operator in its own session against a kubeconfig, with short resync
and backoff, waits for kopf's liveness endpoint, and can be killed (SIGKILL: no cleanup at all,
the crash that restart safety is about) and started again. Its output goes to a log file; the
`operator` fixtures add the logs of a failed test's operators to the test's report.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

_operator_logs = pytest.StashKey[list[Path]]()

DEFAULT_ARGS = ("--resync-seconds", "3", "--backoff-max-seconds", "10", "--metrics-port", "0")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OperatorProcess:
    def __init__(
        self,
        kubeconfig: Path,
        log_path: Path,
        *,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.extra_args = list(extra_args)
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.starts = 0

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "modelcycle",
            "operator",
            "--kubeconfig",
            str(self.kubeconfig),
            *DEFAULT_ARGS,
            "--bind-address",
            "127.0.0.1",
            "--liveness-port",
            str(self.port),
            *self.extra_args,
        ]

    def start(self, *, timeout: float = 60) -> OperatorProcess:
        assert not self.alive(), "the operator is already running"
        self.port = free_port()
        self.starts += 1
        env = {**os.environ, **(self.env or {}), "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts}: {' '.join(self.command())}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if self.process.poll() is not None:
                raise RuntimeError(f"the operator exited with {self.process.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the operator was not healthy after {timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(0.1)
        return self

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Signal the operator's whole process group and wait for it to be gone."""
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=20)
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== stopped with {sig.name}, exit code {self.process.returncode}\n".encode())

    def stop(self) -> None:
        self.kill(signal.SIGTERM)

    def restart(self, *, sig: signal.Signals = signal.SIGKILL) -> OperatorProcess:
        self.kill(sig)
        return self.start()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 80) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


OperatorFactory = Callable[..., OperatorProcess]


@pytest.fixture
def operator_factory(
    request: pytest.FixtureRequest, kubeconfig: Path, installed_crds: list[str], tmp_path: Path
) -> Iterator[OperatorFactory]:
    """Start operators for this test (stopped afterwards; their logs go into a failure's report).

    Call as operator_factory() or operator_factory(kubeconfig=..., extra_args=[...]).
    """
    started: list[OperatorProcess] = []
    logs = request.node.stash.setdefault(_operator_logs, [])

    def factory(
        *,
        kubeconfig_path: Path | None = None,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> OperatorProcess:
        log_path = tmp_path / f"operator-{len(started) + 1}.log"
        logs.append(log_path)
        process = OperatorProcess(kubeconfig_path or kubeconfig, log_path, extra_args=extra_args, env=env)
        started.append(process)
        return process.start()

    yield factory
    for process in started:
        process.stop()


@pytest.fixture
def operator(operator_factory: OperatorFactory) -> OperatorProcess:
    """A running operator watching all namespaces, with resync 3 s and backoff at most 10 s."""
    return operator_factory()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and report.when in ("setup", "call"):
        for path in item.stash.get(_operator_logs, []):
            text = path.read_text(errors="replace") if path.exists() else "(no log)"
            report.sections.append((f"operator log {path.name}", "\n".join(text.splitlines()[-400:])))
    return report


# --------------------------------------------------------------------------- least privilege


def service_account_kubeconfig(
    api: client.ApiClient,
    admin_kubeconfig: Path,
    *,
    namespace: str,
    name: str,
    rules: list[dict[str, Any]],
    out: Path,
) -> Path:
    """A kubeconfig for ServiceAccount `namespace/name` bound to a new ClusterRole `name` with `rules`.

    The caller deletes the ClusterRole and ClusterRoleBinding (both named `name`) afterwards.
    """
    core, rbac_api = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name))
    )
    policy = [
        client.V1PolicyRule(api_groups=r["apiGroups"], resources=r["resources"], verbs=r["verbs"])
        for r in rules
    ]
    rbac_api.create_cluster_role(client.V1ClusterRole(metadata=client.V1ObjectMeta(name=name), rules=policy))
    rbac_api.create_cluster_role_binding(
        client.V1ClusterRoleBinding(
            metadata=client.V1ObjectMeta(name=name),
            role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=name),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name=name, namespace=namespace)],
        )
    )
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
    )
    status = core.create_namespaced_service_account_token(name, namespace, request).status
    assert status is not None
    token = status.token
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    cluster = admin["clusters"][0]
    out.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster],
                "users": [{"name": name, "user": {"token": token}}],
                "contexts": [{"name": name, "context": {"cluster": cluster["name"], "user": name}}],
                "current-context": name,
            }
        )
    )
    return out


def delete_cluster_rbac(api: client.ApiClient, name: str) -> None:
    rbac_api = client.RbacAuthorizationV1Api(api)
    for delete in (rbac_api.delete_cluster_role_binding, rbac_api.delete_cluster_role):
        try:
            delete(name)
        except ApiException as exc:
            if exc.status != 404:
                raise


ServiceAccountFactory = Callable[..., Path]


@pytest.fixture
def service_account_kubeconfig_factory(
    api_client: client.ApiClient, kubeconfig: Path, new_namespace: Callable[..., str], tmp_path: Path
) -> Iterator[ServiceAccountFactory]:
    """Kubeconfigs of ServiceAccounts with given ClusterRole rules (RBAC removed afterwards).

    Call as factory(rules) -> kubeconfig path."""
    names: list[str] = []
    home = new_namespace()

    def factory(rules: list[dict[str, Any]]) -> Path:
        name = f"{home}-sa{len(names)}"
        names.append(name)
        return service_account_kubeconfig(
            api_client,
            kubeconfig,
            namespace=home,
            name=name,
            rules=rules,
            out=tmp_path / f"{name}.kubeconfig",
        )

    yield factory
    for name in names:
        delete_cluster_rbac(api_client, name)
