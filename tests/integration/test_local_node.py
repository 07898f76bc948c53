"""The local node against a real control plane: the real kube-scheduler binds pods to it, the Job,
ReplicaSet and Deployment controllers act on the status it writes, and its pods are processes.

Every pod here is `restricted`-compliant and runs in a namespace that enforces it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from modelcycle.local.controlplane import ControlPlane
from modelcycle.local.node_process import Run, is_same_process
from support.cluster import RESTRICTED_CONTAINER, RESTRICTED_NAMESPACE, NamespaceFactory, wait_for

NODE_NAME = "modelcycle-local-it"


# --------------------------------------------------------------------------- the agent


@dataclass
class LocalNode:
    """The node agent as a child process, as `modelcycle local node` runs it."""

    kubeconfig: Path
    state_dir: Path
    api: client.ApiClient
    name: str = NODE_NAME
    popen: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)
    starts: int = 0

    def __post_init__(self) -> None:
        self.log_path = self.state_dir.parent / "agent.log"

    def start(self) -> None:
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n=== start {self.starts}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "modelcycle.local.node",
                    "--kubeconfig",
                    str(self.kubeconfig),
                    "--name",
                    self.name,
                    "--state-dir",
                    str(self.state_dir),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.wait(self.schedulable, timeout=60, what=f"Node {self.name} Ready and untainted")

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, as when the agent crashes."""
        assert self.popen is not None
        self.popen.kill()
        self.popen.wait(10)

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no agent log)"

    def wait(self, condition: Callable[[], Any], *, timeout: float, what: str) -> Any:
        try:
            return wait_for(condition, timeout=timeout, interval=0.2, what=what)
        except TimeoutError as exc:
            raise TimeoutError(
                f"{exc}\nlast lines of the node agent's log {self.log_path}:\n{self.log_tail()}"
            ) from None

    def node(self) -> client.V1Node:
        return client.CoreV1Api(self.api).read_node(self.name)

    def schedulable(self) -> bool:
        try:
            node = self.node()
        except ApiException:
            return False
        ready = any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])
        return ready and not node.spec.taints


def stop_leftover_processes(state_dir: Path) -> None:
    for run_json in state_dir.glob("pods/*/containers/*/runs/*/run.json"):
        run = Run.load(run_json.parent)
        if run is not None and run.wrapper_alive():
            run.kill()


@pytest.fixture(scope="module")
def local_node(
    control_plane: ControlPlane, api_client: client.ApiClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalNode]:
    node = LocalNode(control_plane.kubeconfig, tmp_path_factory.mktemp("local-node") / "state", api_client)
    node.start()
    yield node
    node.stop()
    stop_leftover_processes(node.state_dir)
    # Leave the cluster node-less again, as the other integration tests expect.
    with contextlib.suppress(ApiException):
        client.CoreV1Api(api_client).delete_node(node.name)


@pytest.fixture
def ns(new_namespace: NamespaceFactory, local_node: LocalNode) -> str:
    return new_namespace(labels=RESTRICTED_NAMESPACE)


# --------------------------------------------------------------------------- manifests and helpers


def container(name: str, command: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "image": "ignored.example/whatever:1",
        "command": command,
        "securityContext": RESTRICTED_CONTAINER,
        **extra,
    }


def pod_spec(*containers: dict[str, Any], restart_policy: str = "Never", **extra: Any) -> dict[str, Any]:
    return {
        "restartPolicy": restart_policy,
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": list(containers),
        **extra,
    }


def python(code: str) -> list[str]:
    return ["python", "-c", code]


def job_manifest(name: str, spec: dict[str, Any], *, backoff_limit: int = 0) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"backoffLimit": backoff_limit, "template": {"spec": spec}},
    }


def job_condition(api: client.ApiClient, namespace: str, name: str) -> str | None:
    job = client.BatchV1Api(api).read_namespaced_job(name, namespace)
    for condition in job.status.conditions or []:
        if condition.type in ("Complete", "Failed") and condition.status == "True":
            return str(condition.type)
    return None


def job_pod(api: client.ApiClient, namespace: str, name: str) -> client.V1Pod:
    pods = client.CoreV1Api(api).list_namespaced_pod(
        namespace, label_selector=f"batch.kubernetes.io/job-name={name}"
    )
    assert len(pods.items) == 1, [p.metadata.name for p in pods.items]
    return pods.items[0]


def run_job(
    node: LocalNode, namespace: str, name: str, spec: dict[str, Any], *, timeout: float = 60
) -> tuple[str, client.V1Pod]:
    client.BatchV1Api(node.api).create_namespaced_job(namespace, job_manifest(name, spec))
    outcome = node.wait(
        lambda: job_condition(node.api, namespace, name), timeout=timeout, what=f"Job {name} to finish"
    )
    return outcome, job_pod(node.api, namespace, name)


def run_pod(
    node: LocalNode, namespace: str, name: str, spec: dict[str, Any], *, timeout: float = 60
) -> client.V1Pod:
    core = client.CoreV1Api(node.api)
    core.create_namespaced_pod(
        namespace, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}
    )

    def finished() -> client.V1Pod | None:
        pod = core.read_namespaced_pod(name, namespace)
        return pod if pod.status.phase in ("Succeeded", "Failed") else None

    return node.wait(finished, timeout=timeout, what=f"pod {name} to finish")


def terminated(pod: client.V1Pod) -> client.V1ContainerStateTerminated:
    state = pod.status.container_statuses[0].state.terminated
    assert state is not None, pod.status
    return state


def message_json(pod: client.V1Pod) -> Any:
    return json.loads(terminated(pod).message)


def pid_of(status: client.V1ContainerStatus) -> int:
    assert status.container_id.startswith("local://"), status.container_id
    return int(status.container_id.removeprefix("local://"))


# --------------------------------------------------------------------------- the node


def test_node_is_ready_schedulable_and_renews_its_lease(
    local_node: LocalNode, api_client: client.ApiClient
) -> None:
    node = local_node.node()
    assert node.metadata.labels["kubernetes.io/hostname"] == NODE_NAME
    assert not node.spec.taints
    assert int(node.status.capacity["cpu"]) == len(os.sched_getaffinity(0))
    assert node.status.capacity["pods"] == "110"
    assert node.status.allocatable["memory"].endswith("Ki")
    assert {"type": "InternalIP", "address": "127.0.0.1"} in [a.to_dict() for a in node.status.addresses]
    assert node.status.node_info.operating_system == "linux"
    ready = next(c for c in node.status.conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == ("True", "KubeletReady")

    coordination = client.CoordinationV1Api(api_client)
    lease = coordination.read_namespaced_lease(NODE_NAME, "kube-node-lease")
    assert lease.spec.holder_identity == NODE_NAME
    assert lease.metadata.owner_references[0].uid == node.metadata.uid
    first = lease.spec.renew_time

    def renewed() -> bool:
        return bool(coordination.read_namespaced_lease(NODE_NAME, "kube-node-lease").spec.renew_time > first)

    local_node.wait(renewed, timeout=25, what="the Lease to be renewed")


# --------------------------------------------------------------------------- Jobs


def test_job_completes_and_its_termination_message_is_in_the_pod_status(
    local_node: LocalNode, ns: str
) -> None:
    code = (
        "import json, os\n"
        "print('hello from the local node')\n"
        "open('/dev/termination-log', 'w').write(json.dumps({'ok': True, 'ip': os.environ['POD_IP']}))\n"
    )
    outcome, pod = run_job(local_node, ns, "hello", pod_spec(container("main", python(code))))

    assert outcome == "Complete"
    assert pod.spec.node_name == NODE_NAME  # bound by the real scheduler
    assert pod.status.phase == "Succeeded"
    state = terminated(pod)
    assert (state.exit_code, state.reason) == (0, "Completed")
    assert state.started_at and state.finished_at
    assert message_json(pod) == {"ok": True, "ip": pod.status.pod_ip}
    assert pod.status.pod_ip.startswith("127.1.")
    assert pod.status.host_ip == "127.0.0.1"
    status = pod.status.container_statuses[0]
    assert status.image == "ignored.example/whatever:1"
    assert status.image_id and status.restart_count == 0 and status.ready is False
    conditions = {c.type: c for c in pod.status.conditions}
    assert conditions["Ready"].status == "False" and conditions["Ready"].reason == "PodCompleted"
    assert conditions["Initialized"].status == "True"
    logs = list(local_node.state_dir.glob(f"logs/{ns}_{pod.metadata.name}_{pod.metadata.uid}/main/0.log"))
    assert logs and "hello from the local node" in logs[0].read_text()


def test_kubectl_logs_reads_the_container_log_through_the_node(
    local_node: LocalNode, ns: str, kubectl: Path, control_plane: ControlPlane
) -> None:
    code = "import sys\nfor n in range(3):\n    print('line', n)\nprint('to stderr', file=sys.stderr)\n"
    outcome, pod = run_job(local_node, ns, "talk", pod_spec(container("main", python(code))))
    assert outcome == "Complete"

    def logs(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                str(kubectl),
                "--kubeconfig",
                str(control_plane.kubeconfig),
                "-n",
                ns,
                "logs",
                pod.metadata.name,
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )

    full = logs()
    assert full.returncode == 0, full.stderr
    assert sorted(full.stdout.splitlines()) == ["line 0", "line 1", "line 2", "to stderr"]
    assert logs("--tail=1", "-f").stdout.strip() in ("line 2", "to stderr")
    previous = logs("--previous")
    assert previous.returncode != 0 and "previous terminated container" in previous.stderr


def test_failing_command_fails_the_job_with_exit_code_and_log_tail(local_node: LocalNode, ns: str) -> None:
    main = container(
        "main",
        ["sh", "-c", "echo preparing; echo 'it broke: no data' >&2; exit 3"],
        terminationMessagePolicy="FallbackToLogsOnError",
    )
    outcome, pod = run_job(local_node, ns, "fails", pod_spec(main))

    assert outcome == "Failed"
    assert pod.status.phase == "Failed"
    state = terminated(pod)
    assert (state.exit_code, state.reason) == (3, "Error")
    assert "it broke: no data" in state.message


def test_pod_with_a_command_not_installed_here_fails_clearly(local_node: LocalNode, ns: str) -> None:
    outcome, pod = run_job(
        local_node, ns, "nocmd", pod_spec(container("main", ["no-such-command-anywhere", "--x"]))
    )

    assert outcome == "Failed"
    assert pod.status.phase == "Failed"
    assert pod.status.reason == "CommandNotFound"
    state = terminated(pod)
    assert state.reason == "CommandNotFound"
    assert 'command "no-such-command-anywhere" not found' in state.message


def test_pod_without_a_command_cannot_use_the_image_and_says_so(local_node: LocalNode, ns: str) -> None:
    entrypoint_only = {
        "name": "main",
        "image": "busybox:1.36",
        "args": ["true"],
        "securityContext": RESTRICTED_CONTAINER,
    }
    pod = run_pod(local_node, ns, "entrypoint", pod_spec(entrypoint_only))

    assert pod.status.phase == "Failed"
    assert pod.status.reason == "CommandNotFound"
    assert "has no command" in terminated(pod).message


def test_on_failure_restarts_the_container_until_it_succeeds(local_node: LocalNode, ns: str) -> None:
    code = (
        "import os, sys\n"
        "marker = '/scratch/attempted'\n"
        "if not os.path.exists(marker):\n"
        "    open(marker, 'w').close()\n"
        "    sys.exit(1)\n"
        "open('/dev/termination-log', 'w').write('second time lucky')\n"
    )
    spec = pod_spec(
        container("main", python(code), volumeMounts=[{"name": "scratch", "mountPath": "/scratch"}]),
        restart_policy="OnFailure",
        volumes=[{"name": "scratch", "emptyDir": {}}],
    )
    pod = run_pod(local_node, ns, "flaky", spec)

    assert pod.status.phase == "Succeeded"
    status = pod.status.container_statuses[0]
    assert status.restart_count == 1
    assert status.last_state.terminated.exit_code == 1
    assert status.state.terminated.message == "second time lucky"


def test_init_containers_run_first_and_in_order(local_node: LocalNode, ns: str) -> None:
    shared = [{"name": "shared", "mountPath": "/shared"}]
    spec = pod_spec(
        container("main", ["sh", "-c", "cat /shared/steps > /dev/termination-log"], volumeMounts=shared),
        initContainers=[
            container("first", ["sh", "-c", "echo first >> /shared/steps"], volumeMounts=shared),
            container("second", ["sh", "-c", "echo second >> /shared/steps"], volumeMounts=shared),
        ],
        volumes=[{"name": "shared", "emptyDir": {}}],
    )
    pod = run_pod(local_node, ns, "init", spec)

    assert pod.status.phase == "Succeeded", pod.status
    assert terminated(pod).message == "first\nsecond\n"
    assert [s.state.terminated.reason for s in pod.status.init_container_statuses] == [
        "Completed",
        "Completed",
    ]


def test_failing_liveness_probe_restarts_the_container(
    local_node: LocalNode, api_client: client.ApiClient, ns: str
) -> None:
    web = container(
        "web",
        ["python", "-m", "http.server", "--bind", "$(MY_IP)", "8080"],
        env=[{"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        livenessProbe={
            "httpGet": {"path": "/missing", "port": 8080},
            "periodSeconds": 1,
            "failureThreshold": 2,
        },
    )
    spec = pod_spec(web, restart_policy="Always", terminationGracePeriodSeconds=2)
    core = client.CoreV1Api(api_client)
    core.create_namespaced_pod(
        ns, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sick"}, "spec": spec}
    )

    def restarted() -> client.V1ContainerStatus | None:
        statuses = core.read_namespaced_pod("sick", ns).status.container_statuses or []
        return statuses[0] if statuses and statuses[0].restart_count >= 1 else None

    status = local_node.wait(
        restarted, timeout=60, what="the container to be restarted by its liveness probe"
    )
    assert status.last_state.terminated is not None
    events = core.list_namespaced_event(ns, field_selector="involvedObject.name=sick").items
    assert any(e.reason == "Killing" and "liveness" in e.message for e in events)


# --------------------------------------------------------------------------- serving


def test_two_replica_deployment_becomes_available_on_distinct_loopback_ips(
    local_node: LocalNode, api_client: client.ApiClient, ns: str
) -> None:
    web = container(
        "web",
        ["python", "-m", "http.server", "--bind", "0.0.0.0", "8080"],  # 0.0.0.0 becomes the pod's IP
        ports=[{"name": "http", "containerPort": 8080}],
        readinessProbe={"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
        livenessProbe={"tcpSocket": {"port": 8080}, "periodSeconds": 2},
    )
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": pod_spec(web, restart_policy="Always", terminationGracePeriodSeconds=5),
            },
        },
    }
    apps = client.AppsV1Api(api_client)
    apps.create_namespaced_deployment(ns, deployment)

    def available() -> bool:
        status = apps.read_namespaced_deployment("web", ns).status
        conditions = {c.type: c.status for c in status.conditions or []}
        return conditions.get("Available") == "True" and status.available_replicas == 2

    local_node.wait(available, timeout=60, what="Deployment web Available with 2 replicas")

    pods = client.CoreV1Api(api_client).list_namespaced_pod(ns, label_selector="app=web").items
    ips = {p.status.pod_ip for p in pods}
    assert len(ips) == 2 and all(ip.startswith("127.1.") for ip in ips)
    for pod in pods:
        assert [i.ip for i in pod.status.pod_ips] == [pod.status.pod_ip]
        assert pod.status.container_statuses[0].ready is True
        with urllib.request.urlopen(f"http://{pod.status.pod_ip}:8080/", timeout=5) as response:
            assert response.status == 200


def test_deleting_a_pod_stops_its_process_within_the_grace_period(
    local_node: LocalNode, api_client: client.ApiClient, ns: str
) -> None:
    core = client.CoreV1Api(api_client)
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
    polite = (
        "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(0)); time.sleep(600)"
    )
    for name, code in (("stubborn", stubborn), ("polite", polite)):
        spec = pod_spec(container("main", python(code)), terminationGracePeriodSeconds=3)
        core.create_namespaced_pod(
            ns, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}
        )

    def running(name: str) -> client.V1Pod | None:
        pod = core.read_namespaced_pod(name, ns)
        return pod if pod.status.phase == "Running" else None

    for name, expected_range in (("polite", (0.0, 2.5)), ("stubborn", (2.5, 10.0))):
        pod = local_node.wait(lambda n=name: running(n), timeout=60, what=f"pod {name} Running")
        pid = pid_of(pod.status.container_statuses[0])
        assert is_same_process(pid, None)
        began = time.monotonic()
        core.delete_namespaced_pod(name, ns)

        def gone(n: str = name) -> bool:
            try:
                core.read_namespaced_pod(n, ns)
            except ApiException as exc:
                return exc.status == 404
            return False

        local_node.wait(gone, timeout=30, what=f"pod {name} to disappear")
        took = time.monotonic() - began
        assert expected_range[0] <= took <= expected_range[1], f"{name} took {took:.1f}s"
        assert not is_same_process(pid, None)


# --------------------------------------------------------------------------- environment and volumes


def test_env_from_config_map_secret_and_downward_api_reaches_the_process(
    local_node: LocalNode, api_client: client.ApiClient, ns: str
) -> None:
    core = client.CoreV1Api(api_client)
    core.create_namespaced_config_map(
        ns, {"metadata": {"name": "settings"}, "data": {"LEVEL": "debug", "MODE": "fast"}}
    )
    token = base64.b64encode(b"s3cret").decode()
    core.create_namespaced_secret(ns, {"metadata": {"name": "creds"}, "data": {"TOKEN": token}})
    names = [
        "LEVEL",
        "CFG_MODE",
        "TOKEN",
        "PLAIN",
        "JOINED",
        "POD_NAME",
        "POD_NS",
        "POD_UID",
        "IP",
        "NODE",
        "TEAM",
        "POD_IP",
    ]
    code = (
        "import json, os\n"
        f"values = {{n: os.environ.get(n) for n in {names!r}}}\n"
        "open('/dev/termination-log', 'w').write(json.dumps(values))\n"
    )
    main = container(
        "main",
        python(code),
        envFrom=[{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}, {"secretRef": {"name": "creds"}}],
        env=[
            {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "LEVEL"}}},
            {"name": "PLAIN", "value": "plain"},
            {"name": "JOINED", "value": "$(PLAIN)-$(CFG_MODE)"},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "TEAM", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['team']"}}},
        ],
    )
    core.create_namespaced_pod(
        ns,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "env", "labels": {"team": "ml"}},
            "spec": pod_spec(main),
        },
    )

    def finished() -> client.V1Pod | None:
        pod = core.read_namespaced_pod("env", ns)
        return pod if pod.status.phase in ("Succeeded", "Failed") else None

    pod = local_node.wait(finished, timeout=60, what="pod env to finish")
    assert pod.status.phase == "Succeeded", pod.status
    assert message_json(pod) == {
        "LEVEL": "debug",
        "CFG_MODE": "fast",
        "TOKEN": "s3cret",
        "PLAIN": "plain",
        "JOINED": "plain-fast",
        "POD_NAME": "env",
        "POD_NS": ns,
        "POD_UID": pod.metadata.uid,
        "IP": pod.status.pod_ip,
        "NODE": NODE_NAME,
        "TEAM": "ml",
        "POD_IP": pod.status.pod_ip,
    }


def test_empty_dir_and_config_map_volumes_are_visible_at_their_mount_paths(
    local_node: LocalNode, api_client: client.ApiClient, ns: str
) -> None:
    client.CoreV1Api(api_client).create_namespaced_config_map(
        ns, {"metadata": {"name": "app-config"}, "data": {"app.yaml": "threshold: 0.7\n"}}
    )
    code = (
        "import json, os\n"
        "open('/scratch/note.txt', 'w').write('scratch works')\n"
        "result = {\n"
        "    'config': open('/etc/app/app.yaml').read(),\n"
        "    'scratch': open('/scratch/note.txt').read(),\n"
        "    'workdir': os.getcwd() == os.environ['SCRATCH_DIR'],\n"
        "    'map': sorted(json.loads(os.environ['MODELCYCLE_PATH_MAP'])),\n"
        "}\n"
        "open('/dev/termination-log', 'w').write(json.dumps(result))\n"
    )
    main = container(
        "main",
        python(code),
        workingDir="/scratch",
        env=[{"name": "SCRATCH_DIR", "value": "/scratch"}],
        volumeMounts=[
            {"name": "scratch", "mountPath": "/scratch"},
            {"name": "config", "mountPath": "/etc/app", "readOnly": True},
        ],
    )
    spec = pod_spec(
        main,
        volumes=[
            {"name": "scratch", "emptyDir": {}},
            {"name": "config", "configMap": {"name": "app-config"}},
        ],
    )
    pod = run_pod(local_node, ns, "volumes", spec)

    assert pod.status.phase == "Succeeded", pod.status
    assert message_json(pod) == {
        "config": "threshold: 0.7\n",
        "scratch": "scratch works",
        "workdir": True,
        "map": ["/dev/termination-log", "/etc/app", "/scratch"],
    }


def test_claim_bound_to_a_local_persistent_volume_maps_to_its_directory(
    local_node: LocalNode, api_client: client.ApiClient, ns: str, tmp_path: Path
) -> None:
    store = tmp_path / "artifacts"
    store.mkdir()
    (store / "input.txt").write_text("from the PV")
    core = client.CoreV1Api(api_client)
    pv_name = f"local-{ns}"
    core.create_persistent_volume(
        {
            "metadata": {"name": pv_name},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "modelcycle-local-it",
                "local": {"path": str(store)},
                "nodeAffinity": {
                    "required": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {"key": "kubernetes.io/hostname", "operator": "In", "values": [NODE_NAME]}
                                ]
                            }
                        ]
                    }
                },
                "claimRef": {"namespace": ns, "name": "artifacts"},
            },
        }
    )
    try:
        core.create_namespaced_persistent_volume_claim(
            ns,
            {
                "metadata": {"name": "artifacts"},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": "modelcycle-local-it",
                    "resources": {"requests": {"storage": "1Gi"}},
                    "volumeName": pv_name,
                },
            },
        )
        code = (
            "import os\n"
            "text = open(os.path.join(os.environ['MODELCYCLE_STORE'], 'input.txt')).read()\n"
            "open('/artifacts/models/out.txt', 'w').write(text + ' and back')\n"
        )
        main = container(
            "main",
            ["sh", "-c", 'mkdir -p /artifacts/models && exec python -c "$0"', code],
            env=[{"name": "MODELCYCLE_STORE", "value": "/artifacts"}],
            volumeMounts=[{"name": "artifacts", "mountPath": "/artifacts"}],
        )
        spec = pod_spec(
            main, volumes=[{"name": "artifacts", "persistentVolumeClaim": {"claimName": "artifacts"}}]
        )
        pod = run_pod(local_node, ns, "uses-pv", spec)

        assert pod.status.phase == "Succeeded", pod.status
        assert (store / "models" / "out.txt").read_text() == "from the PV and back"
    finally:
        core.delete_persistent_volume(pv_name)


def test_claim_the_node_cannot_use_keeps_the_pod_waiting_with_a_clear_reason(
    local_node: LocalNode, api_client: client.ApiClient, ns: str
) -> None:
    """A bound claim whose volume the local node cannot use (an NFS PV) leaves the container
    waiting with the reason, instead of running it without its data. (An unbound claim never
    reaches the node: the scheduler does not place a pod whose claim is unbound.)"""
    core = client.CoreV1Api(api_client)
    pv_name = f"nfs-{ns}"
    core.create_persistent_volume(
        {
            "metadata": {"name": pv_name},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "modelcycle-nfs-it",
                "nfs": {"server": "192.0.2.1", "path": "/exports"},
                "claimRef": {"namespace": ns, "name": "remote"},
            },
        }
    )
    try:
        core.create_namespaced_persistent_volume_claim(
            ns,
            {
                "metadata": {"name": "remote"},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": "modelcycle-nfs-it",
                    "resources": {"requests": {"storage": "1Gi"}},
                    "volumeName": pv_name,
                },
            },
        )
        main = container("main", ["true"], volumeMounts=[{"name": "remote", "mountPath": "/remote"}])
        spec = pod_spec(main, volumes=[{"name": "remote", "persistentVolumeClaim": {"claimName": "remote"}}])
        core.create_namespaced_pod(
            ns, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "remote"}, "spec": spec}
        )

        def waiting() -> Any:
            statuses = core.read_namespaced_pod("remote", ns).status.container_statuses or []
            state = statuses[0].state.waiting if statuses else None
            return state if state is not None and state.reason == "CreateContainerConfigError" else None

        state = local_node.wait(
            waiting, timeout=60, what="the container to wait with CreateContainerConfigError"
        )
        assert "neither a local nor a hostPath volume" in state.message
        assert core.read_namespaced_pod("remote", ns).status.phase == "Pending"
    finally:
        core.delete_persistent_volume(pv_name)


# --------------------------------------------------------------------------- restart drill


def test_agent_killed_mid_run_re_attaches_and_nothing_runs_twice(
    local_node: LocalNode, api_client: client.ApiClient, ns: str, tmp_path: Path
) -> None:
    starts = tmp_path / "starts.log"
    code = (
        "import sys, time\n"
        f"open({str(starts)!r}, 'a').write('started\\n')\n"
        "time.sleep(float(sys.argv[1]))\n"
        "open('/dev/termination-log', 'w').write('finished ' + sys.argv[1])\n"
    )
    core = client.CoreV1Api(api_client)
    batch = client.BatchV1Api(api_client)
    batch.create_namespaced_job(ns, job_manifest("long", pod_spec(container("main", [*python(code), "6"]))))
    batch.create_namespaced_job(ns, job_manifest("short", pod_spec(container("main", [*python(code), "1"]))))

    def both_running() -> bool:
        pods = core.list_namespaced_pod(ns).items
        return len(pods) == 2 and all(p.status.phase == "Running" for p in pods)

    local_node.wait(both_running, timeout=60, what="both Jobs' pods Running")
    pids = {
        p.metadata.name: pid_of(p.status.container_statuses[0]) for p in core.list_namespaced_pod(ns).items
    }
    local_node.kill()
    time.sleep(2)  # `short` ends while the agent is away; `long` keeps running without it
    assert any(is_same_process(pid, None) for pid in pids.values())
    local_node.start()

    for name, seconds in (("long", "6"), ("short", "1")):
        assert (
            local_node.wait(lambda n=name: job_condition(api_client, ns, n), timeout=60, what=f"Job {name}")
            == "Complete"
        )
        pod = job_pod(api_client, ns, name)
        assert terminated(pod).message == f"finished {seconds}"
        assert pod.status.container_statuses[0].restart_count == 0
        assert pid_of(pod.status.container_statuses[0]) in pids.values()
    assert starts.read_text().splitlines() == ["started", "started"]  # one process per pod, never two
    assert len(core.list_namespaced_pod(ns).items) == 2


def test_pod_deleted_while_the_agent_is_down_is_stopped_when_it_returns(
    local_node: LocalNode, api_client: client.ApiClient, ns: str
) -> None:
    core = client.CoreV1Api(api_client)
    spec = pod_spec(
        container("main", python("import time; time.sleep(600)")), terminationGracePeriodSeconds=2
    )
    core.create_namespaced_pod(
        ns, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "orphan"}, "spec": spec}
    )

    def running() -> client.V1Pod | None:
        pod = core.read_namespaced_pod("orphan", ns)
        return pod if pod.status.phase == "Running" else None

    pid = pid_of(local_node.wait(running, timeout=60, what="pod orphan Running").status.container_statuses[0])
    local_node.kill()
    core.delete_namespaced_pod("orphan", ns, grace_period_seconds=0)  # forced: gone from the API at once
    local_node.start()

    local_node.wait(lambda: not is_same_process(pid, None), timeout=30, what=f"pid {pid} to be stopped")
