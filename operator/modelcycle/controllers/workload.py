"""Following a workload Job: is it running, did it succeed, and what did its container report.

The data, training and validation controllers share this. A workload writes its result JSON to its
container's termination message (docs/workloads.md); the kubelet copies it into the Pod's
`status.containerStatuses[].state.terminated.message`, which is where the operator reads it. Job
pods are kept until the Job is deleted (no `ttlSecondsAfterFinished`), and a controller copies the
result into its object's status as soon as it has read it, so a restart never loses a result.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from modelcycle.api import conditions
from modelcycle.controllers import kube, runtime

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
CONTROLLER_UID_LABEL = "batch.kubernetes.io/controller-uid"

RBAC_RULES: list[dict[str, Any]] = [
    # Results are read from the terminated containers of a Job's pods.
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
]

State = Literal["Running", "Succeeded", "Failed"]


@dataclass
class JobResult:
    """What a finished Job reported."""

    state: State
    result: dict[str, Any] = field(default_factory=dict)
    """The result JSON; `{}` when the Job is still running or no container reported one."""
    reason: str = ""
    """CamelCase reason: the workload's own, else the Job's failure reason."""
    message: str = ""
    exit_code: int | None = None

    @property
    def reported(self) -> bool:
        return bool(self.result)


def job_state(job: dict[str, Any]) -> tuple[State, str, str]:
    """Running, Succeeded or Failed, from the Job's terminal conditions (with reason and message)."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return "Succeeded", condition.get("reason") or "Completed", condition.get("message") or ""
        if condition.get("type") == "Failed":
            return "Failed", condition.get("reason") or "JobFailed", condition.get("message") or ""
    return "Running", "", ""


def _terminated(pod: dict[str, Any]) -> dict[str, Any] | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (status.get("state") or {}).get("terminated")
        if terminated:
            return dict(terminated)
    return None


def parse_message(message: str | None) -> dict[str, Any]:
    """The result JSON of a termination message; a non-JSON message (a log tail) becomes a failure."""
    text = (message or "").strip()
    if not text:
        return {}
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        return parsed
    # FallbackToLogsOnError: the kubelet put the end of the log there instead.
    return {"ok": False, "reason": "WorkloadFailed", "message": text[-2000:]}


def read_result(client: kube.Client, job: dict[str, Any]) -> JobResult:
    """The Job's state and the result its (last) terminated container reported."""
    state, job_reason, job_message = job_state(job)
    if state == "Running":
        return JobResult(state="Running")
    metadata = job["metadata"]
    selector = f"{CONTROLLER_UID_LABEL}={metadata['uid']}"
    pods = client.list(kind="Pod", namespace=metadata["namespace"], label_selector=selector)
    wanted_phase = "Succeeded" if state == "Succeeded" else "Failed"
    finished: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for pod in pods:
        terminated = _terminated(pod)
        if terminated is not None and (pod.get("status") or {}).get("phase") == wanted_phase:
            finished.append((pod, terminated))
    # The most recent attempt is the one that decided the Job's fate.
    finished.sort(
        key=lambda item: (item[1].get("finishedAt") or "", item[0]["metadata"].get("creationTimestamp") or "")
    )
    result: dict[str, Any] = {}
    exit_code: int | None = None
    if finished:
        last = finished[-1][1]
        exit_code = last.get("exitCode")
        result = parse_message(last.get("message"))
    if state == "Succeeded":
        return JobResult(state=state, result=result, exit_code=exit_code, message=job_message)
    reason = str(result.get("reason") or job_reason or "JobFailed")
    message = str(result.get("message") or job_message or f"Job {metadata['name']} failed")
    return JobResult(state=state, result=result, reason=reason, message=message, exit_code=exit_code)


def recorded(obj: dict[str, Any], job_name: str, done: JobResult, condition_type: str) -> bool:
    """Whether the finished Job's result is already in status although its pods now tell nothing.

    A finished Job's pods can go before the Job does (namespace deletion, pod garbage collection,
    someone's `kubectl delete pod`). Status is the record then: it names this Job and its
    `condition_type` condition holds a verdict, so keep it rather than report the result missing.
    """
    status = obj.get("status") or {}
    found = conditions.find(status.get("conditions"), condition_type) or {}
    return (
        done.state != "Running"
        and not done.reported
        and status.get("jobName") == job_name
        and found.get("status") in ("True", "False")
    )


def transitioned(obj: dict[str, Any], type_: str, status: str, reason: str) -> bool:
    """Whether setting this condition would change its status or reason (announce only then)."""
    found = conditions.find((obj.get("status") or {}).get("conditions"), type_)
    return found is None or found.get("status") != status or found.get("reason") != reason


def delete_job_to_retry(client: kube.Client, job: dict[str, Any], outcome: JobResult) -> None:
    """A Job that failed for a reason a retry may fix: delete it (it is recreated after backoff)."""
    client.delete(kind="Job", namespace=job["metadata"]["namespace"], name=job["metadata"]["name"])
    raise runtime.Stalled(
        outcome.reason or "TransientFailure",
        f"{outcome.message} (Job {job['metadata']['name']} failed with a transient error; "
        "retrying with backoff)",
    )


def failed_outcome(
    obj: dict[str, Any],
    done: JobResult,
    *,
    step: str,
    job_name: str,
    verdict: str,
    event_reason: str,
    status: dict[str, Any],
    events: list[runtime.Event],
) -> runtime.Outcome:
    """The verdict on a `step` Job (e.g. "training") that failed for good: Stalled, and the `verdict`
    condition False with the workload's reason; it stands until the spec changes.

    `events` (what this reconcile did before) come before the Warning Event.
    """
    message = f"{step} Job {job_name} failed: {done.reason}: {done.message}"
    outcome = runtime.stalled_outcome(
        obj,
        reason=done.reason,
        message=message,
        status=status,
        extra=(runtime.ConditionUpdate(verdict, False, done.reason, message),),
        phase="Failed",
        event_reason=event_reason,
    )
    outcome.events[:0] = events
    return outcome


TRANSIENT_EXIT_CODE = 3
"""`modelcycle data|train|validate` exit with 3 when a retry may succeed (store or source unavailable)."""


def is_transient(outcome: JobResult) -> bool:
    return outcome.state == "Failed" and outcome.exit_code == TRANSIENT_EXIT_CODE


def pods_started(job: dict[str, Any]) -> bool:
    """Whether the Job's work began: one of its pods is ready (running), or one has finished. A Job
    whose pods all wait (to be scheduled, for their image) has a `startTime` but runs nothing yet."""
    status = job.get("status") or {}
    return bool(status.get("ready") or status.get("succeeded") or status.get("failed")) or (
        job_state(job)[0] != "Running"
    )


def job_time(job: dict[str, Any], field_name: str) -> str | None:
    value = (job.get("status") or {}).get(field_name)
    return str(value) if value else None
