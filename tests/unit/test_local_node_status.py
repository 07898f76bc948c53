"""The local node's status builders: phases, conditions, container states, node and lease."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from modelcycle.local.node_status import (
    ContainerView,
    PodView,
    Terminated,
    lease_object,
    machine_facts,
    node_object,
    node_resources,
    node_status,
    pod_phase,
    pod_status,
    tail_text,
    termination_message,
)

WHEN = "2030-01-01T00:00:00Z"


def ended(code: int) -> Terminated:
    return Terminated(code, "Completed" if code == 0 else "Error", WHEN, WHEN)


def running(name: str = "c", *, ready: bool = True) -> ContainerView:
    return ContainerView(
        name, "img", "local://x", ready=ready, started=True, waiting=None, running_since=WHEN
    )


def done(name: str = "c", code: int = 0) -> ContainerView:
    return ContainerView(name, "img", "local://x", waiting=None, terminated=ended(code))


def backing_off(name: str = "c", code: int = 1) -> ContainerView:
    return ContainerView(
        name,
        "img",
        "local://x",
        restart_count=1,
        waiting=("CrashLoopBackOff", "back-off"),
        last_terminated=ended(code),
    )


CREATING = ContainerView("c", "img", "local://x")


@pytest.mark.parametrize(
    ("policy", "containers", "phase"),
    [
        ("Never", [CREATING], "Pending"),
        ("Never", [running()], "Running"),
        ("Never", [done(code=0)], "Succeeded"),
        ("Never", [done(code=2)], "Failed"),
        ("Never", [done(code=0), running("d")], "Running"),
        ("Never", [done(code=0), ContainerView("d", "img", "x")], "Pending"),
        ("OnFailure", [backing_off()], "Running"),
        ("OnFailure", [done(code=0)], "Succeeded"),
        ("Always", [backing_off(code=0)], "Running"),
        ("Always", [running(), CREATING], "Pending"),
    ],
)
def test_pod_phase_follows_the_kubelet(policy: str, containers: list[ContainerView], phase: str) -> None:
    assert pod_phase(restart_policy=policy, containers=containers, initialized=True) == phase


def test_pod_phase_before_init_and_on_termination() -> None:
    assert pod_phase(restart_policy="Always", containers=[CREATING], initialized=False) == "Pending"
    assert (
        pod_phase(restart_policy="Never", containers=[CREATING], initialized=False, init_failed=True)
        == "Failed"
    )
    # deleted or node shutdown: restartPolicy Never's rule
    assert (
        pod_phase(restart_policy="Always", containers=[done(code=0)], initialized=True, terminal=True)
        == "Succeeded"
    )
    assert (
        pod_phase(restart_policy="Always", containers=[done(code=143)], initialized=True, terminal=True)
        == "Failed"
    )
    assert (
        pod_phase(restart_policy="Always", containers=[CREATING], initialized=True, terminal=True) == "Failed"
    )


def conditions_by_type(status: dict[str, object]) -> dict[str, dict[str, object]]:
    return {str(c["type"]): c for c in status["conditions"]}  # type: ignore[attr-defined]


def test_running_ready_pod_status() -> None:
    view = PodView(
        phase="Running",
        pod_ip="127.1.0.5",
        host_ip="127.0.0.1",
        start_time=WHEN,
        containers=[running()],
        sandbox_ready=True,
        observed_generation=1,
    )
    scheduled = {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2029-01-01T00:00:00Z"}
    status = pod_status(view, [scheduled], when=WHEN)
    conditions = conditions_by_type(status)
    assert [c["type"] for c in status["conditions"]] == [
        "PodScheduled",
        "PodReadyToStartContainers",
        "Initialized",
        "ContainersReady",
        "Ready",
    ]
    assert conditions["PodScheduled"]["lastTransitionTime"] == "2029-01-01T00:00:00Z"  # kept as it was
    assert all(c["status"] == "True" for c in status["conditions"])
    assert status["podIP"] == "127.1.0.5"
    assert status["podIPs"] == [{"ip": "127.1.0.5"}]
    assert status["hostIPs"] == [{"ip": "127.0.0.1"}]
    assert status["observedGeneration"] == 1
    [container] = status["containerStatuses"]
    assert container["state"] == {"running": {"startedAt": WHEN}}
    assert container["ready"] is True
    assert container["lastState"] == {}


def test_unready_pod_names_its_containers_and_keeps_transition_times() -> None:
    view = PodView(
        "Running",
        "127.1.0.5",
        "127.0.0.1",
        WHEN,
        [running("a"), running("b", ready=False)],
        sandbox_ready=True,
    )
    previous = [{"type": "Ready", "status": "False", "lastTransitionTime": "2029-01-01T00:00:00Z"}]
    ready = conditions_by_type(pod_status(view, previous, when=WHEN))["Ready"]
    assert ready["status"] == "False"
    assert ready["reason"] == "ContainersNotReady"
    assert ready["message"] == "containers with unready status: [b]"
    assert ready["lastTransitionTime"] == "2029-01-01T00:00:00Z"


def test_readiness_gates_hold_ready_back() -> None:
    view = PodView(
        "Running",
        "ip",
        "127.0.0.1",
        WHEN,
        [running()],
        sandbox_ready=True,
        readiness_gates=["example.com/lb"],
    )
    conditions = conditions_by_type(pod_status(view, [], when=WHEN))
    assert conditions["ContainersReady"]["status"] == "True"
    assert conditions["Ready"]["reason"] == "ReadinessGatesNotReady"
    gate = {"type": "example.com/lb", "status": "True"}
    assert conditions_by_type(pod_status(view, [gate], when=WHEN))["Ready"]["status"] == "True"


def test_completed_pod_status() -> None:
    message_end = Terminated(0, "Completed", WHEN, WHEN, message='{"ok":true}', container_id="local://42")
    container = ContainerView(
        "c", "img", "local://x", waiting=None, terminated=message_end, container_id="local://42"
    )
    status = pod_status(PodView("Succeeded", "ip", "127.0.0.1", WHEN, [container]), [], when=WHEN)
    conditions = conditions_by_type(status)
    assert conditions["Ready"]["reason"] == "PodCompleted"
    assert conditions["ContainersReady"]["reason"] == "PodCompleted"
    terminated = status["containerStatuses"][0]["state"]["terminated"]
    assert terminated == {
        "exitCode": 0,
        "reason": "Completed",
        "startedAt": WHEN,
        "finishedAt": WHEN,
        "message": '{"ok":true}',
        "containerID": "local://42",
    }
    assert status["containerStatuses"][0]["containerID"] == "local://42"


def test_waiting_and_crash_loop_states() -> None:
    status = pod_status(PodView("Pending", None, "127.0.0.1", None, [backing_off()]), [], when=WHEN)
    [container] = status["containerStatuses"]
    assert container["state"] == {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}}
    assert container["lastState"]["terminated"]["exitCode"] == 1
    assert container["restartCount"] == 1
    assert "podIP" not in status


def test_termination_message_rules() -> None:
    assert (
        termination_message("result", exit_code=1, policy="FallbackToLogsOnError", log_tail="log") == "result"
    )
    assert termination_message("", exit_code=1, policy="FallbackToLogsOnError", log_tail="log") == "log"
    assert termination_message("", exit_code=0, policy="FallbackToLogsOnError", log_tail="log") is None
    assert termination_message("", exit_code=1, policy="File", log_tail="log") is None
    assert termination_message("x" * 5000, exit_code=0, policy=None, log_tail=None) == "x" * 4096


def test_tail_text_keeps_the_last_lines_and_bytes() -> None:
    data = b"".join(f"line {n}\n".encode() for n in range(200))
    tail = tail_text(data)
    assert tail.splitlines()[-1] == "line 199"
    assert len(tail.splitlines()) == 80
    assert len(tail_text(b"y" * 5000).encode()) == 2048


def test_node_object_status_and_lease(tmp_path: Path) -> None:
    facts = machine_facts(tmp_path)
    assert facts.cpu >= 1 and facts.memory_ki > 0
    resources = node_resources(facts, cpu=None, memory="16Gi", max_pods=110)
    assert resources["cpu"] == str(facts.cpu)
    assert resources["memory"] == "16Gi"
    assert resources["pods"] == "110"
    node = node_object("n1", facts)
    assert node["metadata"]["labels"]["kubernetes.io/hostname"] == "n1"
    when = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    previous = [{"type": "Ready", "status": "True", "lastTransitionTime": "2029-01-01T00:00:00Z"}]
    status = node_status(facts, resources=resources, kubelet_version="v1.36.3", when=when, previous=previous)
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    assert ready["lastHeartbeatTime"] == "2030-01-01T00:00:00Z"
    assert ready["lastTransitionTime"] == "2029-01-01T00:00:00Z"
    assert {"type": "InternalIP", "address": "127.0.0.1"} in status["addresses"]
    assert status["nodeInfo"]["kubeletVersion"] == "v1.36.3"
    assert status["allocatable"] == status["capacity"]
    lease = lease_object("n1", "uid-1", when=when)
    assert lease["spec"]["renewTime"] == "2030-01-01T00:00:00.000000Z"
    assert lease["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
