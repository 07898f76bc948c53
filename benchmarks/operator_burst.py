"""How fast the operator turns a burst of TrainingRuns into training Jobs, beside raw Job creation.

One run, one local control plane (etcd, API server, controller manager, scheduler; no node, so no
pod ever runs and nothing trains), one operator process (`modelcycle operator`, as the integration
tier runs it). For each burst size N:

- raw:      the benchmark's own client creates N Jobs (the shape of a training Job), as fast as it
            can with the same concurrency: the rate a client gets from this API server;
- operator: the same client creates N TrainingRuns on one Ready Dataset; a watch notes when each
            run's `<run>-train` Job appears.

Reported per N: the raw create rate, the operator's rate (runs created to Jobs seen) and its ratio,
p50/p99 latency from a run's creation to its Job, operator RSS (idle, peak, and after everything is
deleted) and CPU seconds, and the operator's API requests per run from the audit log (watches
excluded; by verb and resource). Targets for 1,000: >= 0.5x the raw rate, p99 <= 5 s, RSS <= 200 MB
and back within 10% of idle after deletion, <= 3 requests per run.

    python benchmarks/operator_burst.py [--sizes 200 1000] [--concurrency 8]

Needs the control-plane binaries (`make setup`; MODELCYCLE_BIN_DIR points elsewhere).
"""

from __future__ import annotations

import os
import sys

# Run as a script, this file's directory comes first on sys.path, and this module's name would
# shadow the standard library's `operator` (enum, re and argparse import it): take it off.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import argparse  # noqa: E402
import collections  # noqa: E402
import concurrent.futures  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import yaml  # noqa: E402

from modelcycle import API_VERSION  # noqa: E402
from modelcycle.controllers import kube  # noqa: E402
from modelcycle.local.controlplane import ControlPlane  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = "bench"
RAW_LABEL = "bench/raw"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
OPERATOR_AGENT = "modelcycle-operator"
TARGETS = {"ratio": 0.5, "p99": 5.0, "rss_mb": 200.0, "rss_back": 0.10, "requests": 3.0}
PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- the operator process


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Operator:
    def __init__(self, kubeconfig: Path, log: Path) -> None:
        self.port = free_port()
        self.log = open(log, "wb")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "modelcycle", "operator", "--kubeconfig", str(kubeconfig),
                "--metrics-port", "0", "--bind-address", "127.0.0.1", "--liveness-port", str(self.port),
            ],
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2):
                    return
            except OSError:
                if self.process.poll() is not None:
                    raise SystemExit(f"the operator exited {self.process.returncode}; see {log}") from None
                time.sleep(0.5)
        raise SystemExit(f"the operator did not answer /healthz in 120 s; see {log}")

    def rss_mb(self) -> float:
        with open(f"/proc/{self.process.pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE / 2**20

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.process.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


class RssSampler(threading.Thread):
    def __init__(self, operator: Operator) -> None:
        super().__init__(daemon=True)
        self.operator = operator
        self.peak = 0.0
        self.running = True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.operator.rss_mb())
            time.sleep(0.1)


# --------------------------------------------------------------------------- cluster set-up


def apply_crds(client: kube.Client) -> None:
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        with contextlib.suppress(kube.Conflict):
            client.kube.request("POST", CRDS, body=crd)
        wait(lambda c=crd: established(client, c["metadata"]["name"]), what=f"CRD {crd['metadata']['name']}")


def established(client: kube.Client, name: str) -> bool:
    crd = client.kube.request("GET", f"{CRDS}/{name}")
    return any(
        c.get("type") == "Established" and c.get("status") == "True"
        for c in (crd.get("status") or {}).get("conditions") or []
    )


def wait(check: Any, *, what: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


def ready_dataset(client: kube.Client) -> None:
    """A Dataset whose data Job's pod is reported Succeeded with a snapshot (no node runs it)."""
    client.create(
        {
            "apiVersion": API_VERSION,
            "kind": "Dataset",
            "metadata": {"name": "iris", "namespace": NAMESPACE},
            "spec": {"source": {"builtin": {"name": "iris"}}, "target": "target"},
        }
    )
    pod = wait(
        lambda: next(iter(client.list(kind="Pod", namespace=NAMESPACE)), None), what="the data Job's pod"
    )
    result = {
        "ok": True, "uri": "pvc://datasets/bench/iris/data.parquet", "sha256": "0" * 64,
        "rows": 150, "columns": 5, "task": "classification",
    }  # fmt: skip
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    container = pod["spec"]["containers"][0]
    terminated = {
        "exitCode": 0,
        "reason": "Completed",
        "message": json.dumps(result),
        "startedAt": stamp,
        "finishedAt": stamp,
    }
    status = {
        "phase": "Succeeded", "startTime": stamp,
        "containerStatuses": [{
            "name": container["name"], "image": container["image"], "imageID": "", "ready": False,
            "restartCount": 0, "started": False, "state": {"terminated": terminated},
        }],
    }  # fmt: skip
    client.patch(
        kind="Pod",
        namespace=NAMESPACE,
        name=pod["metadata"]["name"],
        patch={"status": status},
        subresource="status",
    )
    wait(lambda: dataset_ready(client), what="Dataset iris Ready")


def dataset_ready(client: kube.Client) -> bool:
    status = client.get(kind="Dataset", namespace=NAMESPACE, name="iris").get("status") or {}
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def raw_job(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {RAW_LABEL: "1"}},
        "spec": {
            "backoffLimit": 1,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "containers": [
                        {"name": "train", "image": "modelcycle/workload:bench", "args": ["train"]}
                    ],
                }
            },
        },
    }


def training_run(name: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "TrainingRun",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "datasetRef": {"name": "iris"},
            "model": {"name": "iris"},
            "estimator": {"class": "sklearn.linear_model.LogisticRegression", "params": {"max_iter": 300}},
        },
    }


# --------------------------------------------------------------------------- measuring


class JobWatch(threading.Thread):
    """When each Job was first seen (a watch on the namespace's Jobs, decoded as plain JSON: the
    generated models would cost this process, on the operator's cores, a few ms per event)."""

    def __init__(self, client: kube.Client) -> None:
        super().__init__(daemon=True)
        self.kube = client.kube
        self.seen: dict[str, float] = {}
        self.running = True

    def run(self) -> None:
        path = kube.path(kind="Job", namespace=NAMESPACE)
        version = None
        while self.running:
            try:
                if version is None:  # (re)list: a Job missed by a broken watch counts from now
                    listed = self.kube.get(path)
                    for job in listed.get("items") or []:
                        self.seen.setdefault(job["metadata"]["name"], time.monotonic())
                    version = listed["metadata"]["resourceVersion"]
                for event in self.kube.watch(path, timeout_seconds=5, resourceVersion=version):
                    metadata = event["object"].get("metadata") or {}
                    version = metadata.get("resourceVersion") or version
                    if event["type"] == "ADDED":
                        self.seen.setdefault(metadata["name"], time.monotonic())
                    if not self.running:
                        break
            except Exception:  # an expired version or a dropped connection: list again
                version = None
                time.sleep(0.2)


def create_all(client: kube.Client, manifests: list[dict[str, Any]], concurrency: int) -> dict[str, float]:
    """Create every manifest (concurrency at once); when each create returned."""
    done: dict[str, float] = {}

    def create(manifest: dict[str, Any]) -> None:
        client.create(manifest)
        done[manifest["metadata"]["name"]] = time.monotonic()

    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(create, manifests))
    return done


def delete_all(client: kube.Client, *, kind: str, label_selector: str | None = None) -> None:
    path = kube.path(kind=kind, namespace=NAMESPACE)
    client.kube.request(
        "DELETE",
        path,
        params={"labelSelector": label_selector},
        body={"propagationPolicy": "Background"},
        timeout=600,  # a collection of 1,000 custom objects takes longer than a GET
    )
    wait(
        lambda: not client.list(kind=kind, namespace=NAMESPACE, label_selector=label_selector),
        what=f"{kind}s gone",
        timeout=300,
    )


def audit_requests(log: Path, since: str, until: str) -> collections.Counter[str]:
    """The operator's requests (not watches) between two audit timestamps, by `verb resource`."""
    counts: collections.Counter[str] = collections.Counter()
    with open(log) as f:
        for line in f:
            entry = json.loads(line)
            if not entry.get("userAgent", "").startswith(OPERATOR_AGENT) or entry.get("verb") == "watch":
                continue
            if not since <= entry.get("requestReceivedTimestamp", "") <= until:
                continue
            ref = entry.get("objectRef") or {}
            resource = ref.get("resource", "?") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
            counts[f"{entry['verb']} {resource}"] += 1
    return counts


def stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1e6) % 1_000_000:06d}Z"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def burst(
    client: kube.Client, operator: Operator, plane: ControlPlane, n: int, concurrency: int, idle: float
) -> dict[str, Any]:
    # Raw Jobs from the same client and concurrency.
    names = [f"raw-{n}-{i}" for i in range(n)]
    start = time.monotonic()
    create_all(client, [raw_job(name) for name in names], concurrency)
    raw_rate = n / (time.monotonic() - start)
    delete_all(client, kind="Job", label_selector=f"{RAW_LABEL}=1")

    watch = JobWatch(client)
    watch.start()
    time.sleep(1)
    sampler = RssSampler(operator)
    sampler.start()
    cpu_before = operator.cpu_seconds()
    since = stamp()
    runs = [f"run-{n}-{i}" for i in range(n)]
    start = time.monotonic()
    created = create_all(client, [training_run(name) for name in runs], concurrency)
    wait(lambda: all(f"{r}-train" in watch.seen for r in runs), what=f"{n} training Jobs", timeout=600)
    elapsed = max(watch.seen[f"{r}-train"] for r in runs) - start
    create_rate = n / (max(created.values()) - start)  # the most the operator could keep up with
    time.sleep(2)  # what the operator does after the Jobs exist (status patches, Events) counts too
    until = stamp()
    cpu = operator.cpu_seconds() - cpu_before
    sampler.running = False
    watch.running = False
    latencies = [watch.seen[f"{r}-train"] - created[r] for r in runs]
    requests = audit_requests(plane.audit_log, since, until)

    print(f"N={n}: measured; {n / elapsed:.0f} Jobs/s (raw {raw_rate:.0f}/s, runs created at "
          f"{create_rate:.0f}/s), p99 "
          f"{percentile(latencies, 0.99):.2f} s, {sum(requests.values()) / n:.2f} requests/run, "
          f"{dict(requests.most_common())}", flush=True)  # fmt: skip
    delete_all(client, kind="TrainingRun")
    delete_all(client, kind="Job", label_selector="modelcycle.io/owner-kind=TrainingRun")
    time.sleep(15)  # let the operator drop what it held and the allocator settle
    return {
        "n": n,
        "raw_rate": raw_rate,
        "rate": n / elapsed,
        "create_rate": create_rate,
        "p50": statistics.median(latencies),
        "p99": percentile(latencies, 0.99),
        "rss_idle": idle,
        "rss_peak": sampler.peak,
        "rss_after": operator.rss_mb(),
        "cpu": cpu,
        "requests": sum(requests.values()) / n,
        "by_request": {k: round(v / n, 2) for k, v in requests.most_common()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--operator-log", type=Path, help="keep the operator's log there")
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory(prefix="modelcycle-bench-") as tmp,
        ControlPlane(state_dir=Path(tmp) / "cp") as plane,
    ):
        client = kube.Client(kube.load_configuration(kubeconfig=str(plane.kubeconfig)))
        client.kube.user_agent = "modelcycle-benchmark"  # so the audit log tells its requests apart
        apply_crds(client)
        client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        wait(
            lambda: client.get_or_none(kind="ServiceAccount", namespace=NAMESPACE, name="default"),
            what="ServiceAccount",
        )
        operator = Operator(plane.kubeconfig, Path(tmp) / "operator.log")
        try:
            ready_dataset(client)
            time.sleep(5)
            idle = operator.rss_mb()
            results = [burst(client, operator, plane, n, args.concurrency, idle) for n in args.sizes]
        finally:
            operator.stop()
            log = (Path(tmp) / "operator.log").read_text(errors="replace")
            if args.operator_log:
                args.operator_log.write_text(log)
    errors = [line for line in log.splitlines() if " ERROR " in line or "Traceback" in line]
    print(report(results, errors))
    return 0


def report(results: list[dict[str, Any]], errors: list[str]) -> str:
    rows = [
        "| N | raw Jobs/s | runs created/s | operator Jobs/s | ratio | p50 s | p99 s "
        "| RSS idle / peak / after MB | CPU s | API requests/run |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        rows.append(
            f"| {r['n']} | {r['raw_rate']:.0f} | {r['create_rate']:.0f} | {r['rate']:.0f} | "
            f"{r['rate'] / r['raw_rate']:.2f}x | "
            f"{r['p50']:.2f} | {r['p99']:.2f} | "
            f"{r['rss_idle']:.0f} / {r['rss_peak']:.0f} / {r['rss_after']:.0f} | "
            f"{r['cpu']:.1f} | {r['requests']:.2f} |"
        )
    lines = ["\n".join(rows), ""]
    for r in results:
        lines.append(
            f"N={r['n']} requests per run: " + ", ".join(f"{k} {v}" for k, v in r["by_request"].items())
        )
    big = results[-1]
    checks = {
        f"throughput >= {TARGETS['ratio']}x raw": big["rate"] / big["raw_rate"] >= TARGETS["ratio"],
        f"p99 <= {TARGETS['p99']} s": big["p99"] <= TARGETS["p99"],
        f"peak RSS <= {TARGETS['rss_mb']:.0f} MB": big["rss_peak"] <= TARGETS["rss_mb"],
        "RSS after deletion within 10% of idle": big["rss_after"]
        <= big["rss_idle"] * (1 + TARGETS["rss_back"]),
        f"<= {TARGETS['requests']:.0f} API requests per run": big["requests"] <= TARGETS["requests"],
    }
    lines.append(
        f"\ntargets at N={big['n']}: "
        + "; ".join(f"{k}: {'met' if ok else 'MISSED'}" for k, ok in checks.items())
    )
    if errors:
        lines.append(f"operator log errors ({len(errors)}): " + " | ".join(errors[:5]))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
