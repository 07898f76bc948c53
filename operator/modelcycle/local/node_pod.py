"""One pod on the local node: prepare it, run its containers as processes, probe them, report status.

A PodWorker owns one pod (by uid) in a thread of its own. Its state survives the agent in the
pod's state directory, so a restarted agent re-attaches to the processes it left running:

  pods/<uid>/pod.json                          namespace, name, pod IP
  pods/<uid>/volumes/<volume>/                 emptyDir, configMap, secret, ... volumes
  pods/<uid>/containers/<name>/state.json      restart count, last and final termination, current run
  pods/<uid>/containers/<name>/runs/<n>/       run.json, child.json, exit.json of the n-th start
  pods/<uid>/containers/<name>/termination-log the container's terminationMessagePath
  pods/<uid>/containers/<name>/work/           working directory and HOME unless the pod sets them
  logs/<namespace>_<pod>_<uid>/<name>/<n>.log  stdout and stderr of the n-th start
"""

from __future__ import annotations

import calendar
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelcycle.local import node_probe
from modelcycle.local.node_env import (
    CommandNotFoundError,
    ContainerConfigError,
    EnvContext,
    LaunchPlan,
    base_environment,
    plan_container,
    probe_command,
)
from modelcycle.local.node_process import Run, read_tail, start_run, write_json
from modelcycle.local.node_status import (
    ContainerView,
    PodView,
    Terminated,
    now,
    pod_phase,
    pod_status,
    rfc3339,
    tail_text,
    termination_message,
)
from modelcycle.local.node_volumes import VolumeLookups, prepare_volumes

if TYPE_CHECKING:
    from modelcycle.local.node import NodeAgent

log = logging.getLogger("modelcycle.local.node")

MIN_FORCED_GRACE = 2.0  # a pod force-deleted from the API still gets this long to stop
RESET_BACKOFF_AFTER = 600.0  # a container that ran this long starts its restart back-off afresh
CONFIG_RETRY_SECONDS = 5.0


def pod_key(pod: Mapping[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass
class Container:
    """Runtime state of one container of the pod."""

    spec: dict[str, Any]
    directory: Path
    init: bool = False
    restart_count: int = 0
    starts: int = 0
    run: Run | None = None
    terminated: Terminated | None = None  # final: will not be started again
    last_terminated: Terminated | None = None
    waiting: tuple[str, str | None] = ("ContainerCreating", None)
    backoff: float = 0.0
    backoff_until: float = 0.0
    started_mono: float = 0.0
    probes: dict[str, node_probe.ProbeState] = field(default_factory=dict)
    plan: LaunchPlan | None = None

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def sidecar(self) -> bool:
        return self.init and self.spec.get("restartPolicy") == "Always"

    @property
    def running(self) -> bool:
        return self.run is not None and self.terminated is None

    @property
    def started(self) -> bool:
        startup = self.probes.get("startup")
        return self.running and (startup is None or startup.result is True)

    @property
    def ready(self) -> bool:
        if not self.started:
            return False
        readiness = self.probes.get("readiness")
        return readiness is None or readiness.result is True

    @property
    def state_file(self) -> Path:
        return self.directory / "state.json"

    @property
    def termination_log(self) -> Path:
        return self.directory / "termination-log"

    @property
    def workdir(self) -> Path:
        return self.directory / "work"

    def run_dir(self, index: int) -> Path:
        return self.directory / "runs" / str(index)

    def fresh_probes(self) -> dict[str, node_probe.ProbeState]:
        """A state for each probe the spec declares, timed from the run's start."""
        return {
            kind: node_probe.ProbeState(kind, self.spec[f"{kind}Probe"], self.started_mono)
            for kind in ("startup", "liveness", "readiness")
            if self.spec.get(f"{kind}Probe")
        }

    def save(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        write_json(
            self.state_file,
            {
                "restartCount": self.restart_count,
                "starts": self.starts,
                "terminated": self.terminated.to_json() if self.terminated else None,
                "lastTerminated": self.last_terminated.to_json() if self.last_terminated else None,
                "backoff": self.backoff,
            },
        )

    def load(self) -> None:
        data = _read_json(self.state_file) or {}
        self.restart_count = int(data.get("restartCount") or 0)
        self.starts = int(data.get("starts") or 0)
        self.backoff = float(data.get("backoff") or 0.0)
        if data.get("terminated"):
            self.terminated = Terminated.from_json(data["terminated"])
        if data.get("lastTerminated"):
            self.last_terminated = Terminated.from_json(data["lastTerminated"])
        if self.terminated is not None:
            return
        if self.starts:
            self.run = Run.load(self.run_dir(self.starts - 1))
        uncounted = Run.load(self.run_dir(self.starts))
        if uncounted is not None:  # the previous agent stopped between starting it and counting it
            self.restart_count += 1 if self.starts else 0
            self.starts += 1
            self.run = uncounted
        if self.run is not None:
            self.started_mono = time.monotonic()
            self.waiting = ("", None)


class PodWorker(threading.Thread):
    """Runs one pod until it ends and is deleted; then the agent forgets it."""

    def __init__(self, agent: NodeAgent, pod: dict[str, Any]) -> None:
        self.agent = agent
        self.uid = str(pod["metadata"]["uid"])
        super().__init__(name=f"pod-{pod_key(pod)}", daemon=True)
        self._lock = threading.Lock()
        self._latest: dict[str, Any] | None = pod
        self._deleted = False
        self._wake = threading.Event()
        self.pod = pod
        self.namespace = str(pod["metadata"]["namespace"])
        self.name = str(pod["metadata"]["name"])
        self.directory = agent.layout.pod_dir(self.uid)
        self.log_dir = agent.layout.pod_log_dir(self.namespace, self.name, self.uid)
        self.pod_ip = ""
        self.start_time: str | None = None
        self.prepared = False
        self.volume_dirs: dict[str, str] = {}
        self.fatal: tuple[str, str] | None = None  # (reason, message): the pod cannot run here
        self.shutdown_reason: tuple[str, str] | None = None
        self.config_retry_at = 0.0
        self.last_status: str | None = None
        self.status_retry_at = 0.0
        self.events_sent: set[tuple[str, str]] = set()
        self.finished = False  # terminal, reported, and nothing left running: the agent may go dormant
        spec = pod.get("spec") or {}
        self.restart_policy = str(spec.get("restartPolicy") or "Always")
        self.init_containers = [
            Container(dict(c), self.directory / "containers" / str(c["name"]), init=True)
            for c in spec.get("initContainers") or []
        ]
        self.containers = [
            Container(dict(c), self.directory / "containers" / str(c["name"]))
            for c in spec.get("containers") or []
        ]

    # ------------------------------------------------------------------ inputs

    def update(self, pod: dict[str, Any] | None) -> None:
        """The latest object from the API; None when it is gone from the API."""
        with self._lock:
            if pod is None:
                self._deleted = True
            else:
                self._latest = pod
        self._wake.set()

    def _snapshot(self) -> tuple[dict[str, Any] | None, bool]:
        with self._lock:
            return self._latest, self._deleted

    @property
    def all_containers(self) -> list[Container]:
        return [*self.init_containers, *self.containers]

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        try:
            self._restore()
        except Exception:
            log.exception("pod %s: could not read its state directory %s", pod_key(self.pod), self.directory)
        while True:
            try:
                if self._step():
                    return
            except Exception:
                log.exception("pod %s: error while syncing; retrying", pod_key(self.pod))
                time.sleep(2.0)
            self._wake.wait(self.agent.options.tick)
            self._wake.clear()

    def _step(self) -> bool:
        """One level-triggered sync; True when this worker is done."""
        latest, deleted = self._snapshot()
        if latest is not None:
            self.pod = latest
        if self.agent.stopping.is_set():
            return self._on_agent_stop()
        if deleted:
            self._terminate(MIN_FORCED_GRACE, why="the pod was deleted from the API")
            self._cleanup()
            return True
        metadata = self.pod.get("metadata") or {}
        if metadata.get("deletionTimestamp"):
            grace = metadata.get("deletionGracePeriodSeconds")
            if grace is None:
                grace = (self.pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
            self._terminate(max(float(grace), 0.0), why="the pod is being deleted")
            self._publish(terminal=True)
            self.agent.delete_pod(self.pod)
            self._cleanup()
            return True
        phase = (self.pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed") and not any(c.running for c in self.all_containers):
            self.finished = True
            return True  # nothing to run; the agent handles its deletion later
        self._sync()
        return False

    def _on_agent_stop(self) -> bool:
        if self.agent.options.stop_pods_on_exit and any(c.running for c in self.all_containers):
            grace = float((self.pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
            self._terminate(min(grace, 10.0), why="the local node is stopping")
            self.shutdown_reason = (
                "Terminated",
                "Pod was terminated in response to the local node stopping.",
            )
            self._publish(terminal=True)
        return True

    # ------------------------------------------------------------------ state directory

    def _restore(self) -> None:
        """Pick up what a previous agent left: the pod IP, restart counts, runs still going."""
        data = _read_json(self.directory / "pod.json") or {}
        status = self.pod.get("status") or {}
        self.start_time = data.get("startTime") or status.get("startTime")
        self.pod_ip = self.agent.claim_ip(self.uid, data.get("podIP") or status.get("podIP"), self.pod)
        reported = {
            str(s.get("name")): s
            for s in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
        }
        for container in self.all_containers:
            container.load()
            if container.run is not None:
                # Probe a re-attached run again, starting from what was reported before the restart
                # (as the kubelet does): ready stays ready, not-ready stays so, until the probes say.
                container.probes = container.fresh_probes()
                previous = reported.get(container.name) or {}
                if "readiness" in container.probes:
                    container.probes["readiness"].result = bool(previous.get("ready"))
                if "startup" in container.probes and previous.get("started"):
                    container.probes["startup"].result = True
                log.info(
                    "pod %s: re-attached to container %s (pid %s)",
                    pod_key(self.pod),
                    container.name,
                    container.run.child_pid or container.run.wrapper_pid,
                )
        if self.start_time is None:
            self.start_time = rfc3339(now())
        self.directory.mkdir(parents=True, exist_ok=True)
        write_json(
            self.directory / "pod.json",
            {
                "namespace": self.namespace,
                "name": self.name,
                "uid": self.uid,
                "podIP": self.pod_ip,
                "startTime": self.start_time,
            },
        )

    def _cleanup(self) -> None:
        self.agent.release_ip(self.uid)
        shutil.rmtree(self.directory, ignore_errors=True)

    # ------------------------------------------------------------------ preparing

    def _env_context(self) -> EnvContext:
        return EnvContext(
            pod_ip=self.pod_ip,
            configmaps=lambda name: self.agent.kube.get_or_none(
                f"/api/v1/namespaces/{self.namespace}/configmaps/{name}"
            ),
            secrets=lambda name: self.agent.kube.get_or_none(
                f"/api/v1/namespaces/{self.namespace}/secrets/{name}"
            ),
            allocatable=self.agent.allocatable,
        )

    def _prepare(self) -> None:
        lookups = VolumeLookups(
            env=self._env_context(),
            claims=lambda name: self.agent.kube.get_or_none(
                f"/api/v1/namespaces/{self.namespace}/persistentvolumeclaims/{name}"
            ),
            volumes=lambda name: self.agent.kube.get_or_none(f"/api/v1/persistentvolumes/{name}"),
        )
        self.volume_dirs = prepare_volumes(self.pod, self.directory / "volumes", lookups)
        self.prepared = True

    def _plan(self, container: Container) -> LaunchPlan:
        container.workdir.mkdir(parents=True, exist_ok=True)
        return plan_container(
            self.pod,
            container.spec,
            ctx=self._env_context(),
            volume_dirs=self.volume_dirs,
            termination_log=str(container.termination_log),
            default_cwd=str(container.workdir),
            base_env=base_environment(os.environ, node_name=self.agent.options.name),
            bin_dir=str(Path(sys.executable).parent),
            host_path=os.environ.get("PATH", os.defpath),
        )

    # ------------------------------------------------------------------ running

    def _sync(self) -> None:
        if self.fatal is None and not self._ensure_prepared():
            self._publish()
            return
        self._check_deadline()
        if self.fatal is None:
            initialized = self._drive_init_containers()
            if initialized:
                for container in self.containers:
                    self._drive(container)
            self._probe_all()
        self._publish()
        if self.fatal is not None and not any(c.running for c in self.all_containers):
            self.finished = True

    def _ensure_prepared(self) -> bool:
        if self.prepared:
            return True
        if time.monotonic() < self.config_retry_at:
            return False
        try:
            self._prepare()
            return True
        except ContainerConfigError as exc:
            self._config_error(None, exc)
            return False

    def _config_error(self, container: Container | None, exc: ContainerConfigError) -> None:
        """A pod that cannot start: wait and retry (as the kubelet does), except a command that
        does not exist here, which fails pods that would not be restarted anyway."""
        message = str(exc)
        self.config_retry_at = time.monotonic() + CONFIG_RETRY_SECONDS
        targets = [container] if container else [c for c in self.all_containers if not c.running]
        for target in targets:
            target.waiting = (exc.reason, message)
        self.event("Warning", "Failed", f"Error: {message}")
        if isinstance(exc, CommandNotFoundError) and self.restart_policy != "Always":
            self.fatal = (exc.reason, message)
            finished = rfc3339(now())
            for target in targets:
                if not target.running and target.terminated is None:
                    target.terminated = Terminated(127, exc.reason, None, finished, message)
                    target.save()
            log.warning("pod %s fails: %s", pod_key(self.pod), message)
        else:
            log.warning("pod %s waits: %s", pod_key(self.pod), message)

    def _drive_init_containers(self) -> bool:
        """Run init containers in order; True once all have succeeded (sidecars: once started)."""
        for container in self.init_containers:
            if container.sidecar:
                self._drive(container)
                if not container.started:
                    return False
                continue
            if container.terminated is not None:
                if container.terminated.exit_code == 0:
                    continue
                return False
            self._drive(container)
            if container.terminated is None or container.terminated.exit_code != 0:
                return False
        return True

    def _should_restart(self, container: Container, exit_code: int) -> bool:
        if container.sidecar:
            return True
        if container.init:
            return exit_code != 0 and self.restart_policy != "Never"
        if self.restart_policy == "Always":
            return True
        return self.restart_policy == "OnFailure" and exit_code != 0

    def _drive(self, container: Container) -> None:
        if container.terminated is not None:
            return
        if container.run is not None:
            ended = container.run.poll()
            if ended is None:
                return
            self._on_exit(container, ended)
            return
        if time.monotonic() >= container.backoff_until and time.monotonic() >= self.config_retry_at:
            self._start(container)

    def _on_exit(self, container: Container, ended: Terminated) -> None:
        assert container.run is not None
        ran_for = time.monotonic() - container.started_mono
        ended = self._with_termination_message(container, ended)
        log.info(
            "pod %s: container %s exited with code %s (log %s)",
            pod_key(self.pod),
            container.name,
            ended.exit_code,
            container.run.log_path,
        )
        container.run = None
        container.probes = {}
        if self._should_restart(container, ended.exit_code):
            container.last_terminated = ended
            if ran_for > RESET_BACKOFF_AFTER:
                container.backoff = 0.0
            delay = container.backoff
            container.backoff = min(
                max(delay * 2, self.agent.options.backoff_initial), self.agent.options.backoff_max
            )
            container.backoff_until = time.monotonic() + delay
            container.waiting = (
                (
                    "CrashLoopBackOff",
                    f"back-off {delay:g}s restarting failed container={container.name} pod={self.name}",
                )
                if delay
                else ("ContainerCreating", None)
            )
            if delay:
                self.event("Warning", "BackOff", f"Back-off restarting failed container {container.name}")
        else:
            container.terminated = ended
        container.save()

    def _with_termination_message(self, container: Container, ended: Terminated) -> Terminated:
        """`ended` with the message the kubelet would report (termination log or log tail)."""
        try:
            text = container.termination_log.read_text(errors="replace")
        except OSError:
            text = ""
        tail = None
        if container.run is not None and ended.exit_code != 0:
            tail = tail_text(read_tail(container.run.log_path)) or None
        message = (
            termination_message(
                text,
                exit_code=ended.exit_code,
                policy=container.spec.get("terminationMessagePolicy"),
                log_tail=tail,
            )
            or ended.message
        )
        return replace(ended, message=message)

    def _start(self, container: Container) -> None:
        try:
            plan = self._plan(container)
        except ContainerConfigError as exc:
            self._config_error(container, exc)
            return
        index = container.starts
        restart_count = container.restart_count + (1 if index else 0)
        container.termination_log.parent.mkdir(parents=True, exist_ok=True)
        container.termination_log.write_bytes(b"")
        log_path = self.log_dir / container.name / f"{restart_count}.log"
        run_dir = container.run_dir(index)
        shutil.rmtree(run_dir, ignore_errors=True)  # a record whose wrapper never started
        # start_run records the run in run_dir before the process exists, and the count is saved
        # after: an agent killed in between re-attaches to it (Container.load), never starts it twice.
        container.run = start_run(run_dir, argv=plan.argv, env=plan.env, cwd=plan.cwd, log_path=log_path)
        container.starts = index + 1
        container.restart_count = restart_count
        container.plan = plan
        container.started_mono = time.monotonic()
        container.waiting = ("", None)
        container.probes = container.fresh_probes()
        container.save()
        log.info(
            "pod %s: started container %s as pid %s at %s; log %s",
            pod_key(self.pod),
            container.name,
            container.run.child_pid or container.run.wrapper_pid,
            self.pod_ip,
            log_path,
        )
        self.event("Normal", "Started", f"Started container {container.name} (local process, log {log_path})")

    def _check_deadline(self) -> None:
        deadline = (self.pod.get("spec") or {}).get("activeDeadlineSeconds")
        if deadline is None or self.start_time is None or self.fatal is not None:
            return
        started = calendar.timegm(time.strptime(self.start_time, "%Y-%m-%dT%H:%M:%SZ"))
        if time.time() - started > float(deadline):
            message = f"Pod was active on the node longer than the specified deadline ({deadline}s)"
            self._terminate(
                float((self.pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)),
                why="deadline exceeded",
            )
            self.fatal = ("DeadlineExceeded", message)
            self.event("Normal", "DeadlineExceeded", message)

    # ------------------------------------------------------------------ probes

    def _probe_all(self) -> None:
        for container in self.all_containers:
            if not container.running or not container.probes or container.run is None:
                continue
            for kind in ("startup", "liveness", "readiness"):
                probe = container.probes.get(kind)
                if probe is None or not probe.due():
                    continue
                startup = container.probes.get("startup")
                if kind != "startup" and startup is not None and startup.result is not True:
                    continue
                if kind == "startup" and probe.result is True:
                    continue
                ok, message = self._run_probe(container, probe)
                changed = probe.record(ok, message)
                if not ok:
                    self.event("Warning", "Unhealthy", f"{kind.capitalize()} probe failed: {message}")
                if changed is False and kind in ("liveness", "startup"):
                    self.event(
                        "Normal",
                        "Killing",
                        f"Container {container.name} failed {kind} probe, will be restarted",
                    )
                    self._stop_container(container, self._grace_seconds())
                    return

    def _run_probe(self, container: Container, probe: node_probe.ProbeState) -> tuple[bool, str]:
        spec = probe.spec
        try:
            if "httpGet" in spec:
                return node_probe.http_get(spec, container.spec, pod_ip=self.pod_ip, timeout=probe.timeout)
            if "tcpSocket" in spec:
                return node_probe.tcp_socket(spec, container.spec, pod_ip=self.pod_ip, timeout=probe.timeout)
            if "exec" in spec:
                if container.plan is None:  # re-attached after an agent restart
                    container.plan = self._plan(container)
                plan = container.plan
                argv = probe_command([str(a) for a in spec["exec"].get("command") or []], plan, self.pod_ip)
                return node_probe.exec_command(argv, env=plan.env, cwd=plan.cwd, timeout=probe.timeout)
        except (ValueError, ContainerConfigError) as exc:
            return False, str(exc)
        return True, "probe type not supported by the local node; counted as success"

    def _grace_seconds(self) -> float:
        return float((self.pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30))

    # ------------------------------------------------------------------ stopping

    def _stop_container(self, container: Container, grace: float) -> None:
        self._terminate(grace, why="probe failure", only=[container])
        self._drive(container)

    def _terminate(self, grace: float, *, why: str, only: list[Container] | None = None) -> None:
        """SIGTERM every running container (through its wrapper), SIGKILL what outlives `grace`."""
        targets = [c for c in (only or self.all_containers) if c.run is not None and c.terminated is None]
        if not targets:
            return
        log.info(
            "pod %s: stopping %s (%s; grace %gs)",
            pod_key(self.pod),
            ", ".join(c.name for c in targets),
            why,
            grace,
        )
        for container in targets:
            assert container.run is not None
            container.run.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(
            c.run is not None and c.run.poll() is None for c in targets
        ):
            time.sleep(0.05)
        for container in targets:
            if container.run is not None and container.run.poll() is None:
                log.info(
                    "pod %s: container %s outlived its grace period; SIGKILL",
                    pod_key(self.pod),
                    container.name,
                )
                container.run.kill()
        kill_deadline = time.monotonic() + 5.0
        while time.monotonic() < kill_deadline and any(
            c.run is not None and c.run.poll() is None for c in targets
        ):
            time.sleep(0.05)
        if only is not None:
            return
        for container in targets:
            assert container.run is not None
            ended = container.run.poll()
            if ended is not None:
                container.terminated = self._with_termination_message(container, ended)
                container.save()

    # ------------------------------------------------------------------ status

    def _view(self, container: Container, *, initialized: bool = True) -> ContainerView:
        run = container.run
        waiting: tuple[str, str | None] | None = None
        running_since = None
        terminated = container.terminated
        if terminated is None and run is not None:
            running_since = run.running_since()
        elif terminated is None and not initialized and not container.init:
            waiting = ("PodInitializing", None)
        elif terminated is None:
            waiting = container.waiting if container.waiting[0] else ("ContainerCreating", None)
        return ContainerView(
            name=container.name,
            image=str(container.spec.get("image") or ""),
            image_id=f"local://{sys.prefix}",
            restart_count=container.restart_count,
            ready=container.ready,
            started=container.started,
            waiting=waiting,
            running_since=running_since,
            terminated=terminated,
            last_terminated=container.last_terminated,
            container_id=(run.container_id if run else (terminated.container_id if terminated else None)),
        )

    def _publish(self, *, terminal: bool = False) -> None:
        if terminal:
            finished = rfc3339(now())
            for container in self.all_containers:
                if container.terminated is None and container.run is None:
                    container.terminated = container.last_terminated or Terminated(
                        137,
                        "ContainerStatusUnknown",
                        None,
                        finished,
                        "The container could not be located when the pod was terminated",
                    )
        initialized = all(
            (c.terminated is not None and c.terminated.exit_code == 0) or (c.sidecar and c.started)
            for c in self.init_containers
        )
        init_views = [self._view(c) for c in self.init_containers]
        views = [self._view(c, initialized=initialized) for c in self.containers]
        init_failed = any(
            c.terminated is not None and c.terminated.exit_code != 0 for c in self.init_containers
        )
        is_terminal = terminal or self.fatal is not None
        phase = pod_phase(
            restart_policy=self.restart_policy,
            containers=views,
            initialized=initialized,
            init_failed=init_failed,
            terminal=is_terminal,
        )
        reason, message = self.fatal or self.shutdown_reason or (None, None)
        spec = self.pod.get("spec") or {}
        view = PodView(
            phase=phase,
            pod_ip=self.pod_ip,
            host_ip=self.agent.host_ip,
            start_time=self.start_time,
            containers=views,
            init_containers=init_views,
            sandbox_ready=self.prepared,
            initialized=initialized,
            reason=reason,
            message=message,
            readiness_gates=[str(g.get("conditionType")) for g in spec.get("readinessGates") or []],
            observed_generation=(self.pod.get("metadata") or {}).get("generation"),
        )
        existing = (self.pod.get("status") or {}).get("conditions") or []
        status = pod_status(view, existing, when=rfc3339(now()))
        fingerprint = json.dumps(status, sort_keys=True)
        if fingerprint == self.last_status or (not terminal and time.monotonic() < self.status_retry_at):
            return
        if self.agent.patch_pod_status(self.pod, status):
            self.last_status = fingerprint
        else:
            self.status_retry_at = time.monotonic() + 2.0

    def event(self, kind: str, reason: str, message: str, *, once: bool = True) -> None:
        key = (reason, message)
        if once and key in self.events_sent:
            return
        self.events_sent.add(key)
        self.agent.emit_event(self.pod, kind, reason, message)
