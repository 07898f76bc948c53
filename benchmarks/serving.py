"""Serving benchmark: `modelcycle serve` against MLServer and KServe on the same models (not a test).

    ~/.cache/modelcycle/venv/bin/python benchmarks/serving.py [--duration 10] [--servers ours,mlserver,kserve]
        [--protocols rest,grpc]
    # inference logging on vs off: --servers ours,ours-logging --models lr --batches 1

- Models: breast_cancer (30 features), a scaled logistic regression and a 50-tree random forest,
  fitted once here. Ours loads the skops file (+ metadata.json); KServe a `kserve.Model` subclass
  that loads the same skops file; MLServer's own sklearn runtime (`mlserver-sklearn`) loads the same
  fitted estimator saved with joblib, the only format that runtime reads.
- Peers live in their own virtualenvs under ~/.cache/modelcycle/bench/ (created on first run):
  `mlserver==1.7.1 mlserver-sklearn==1.7.1 'uvloop<0.22'`, and `kserve`; both with this venv's
  scikit-learn version. Every server runs in its best configuration: MLServer with
  `parallel_workers: 0` (inference in the server process, no worker-pool hop), KServe with Python
  warnings silenced; ports apart, the rest is their defaults.
- REST load: `wrk` (Debian package) with a Lua script for the POST body, one thread, 32
  connections, `--duration` seconds per cell after a 2 s warm-up, at most `--max-requests` per cell.
- gRPC load (`inference.GRPCInferenceService/ModelInfer`): a bounded asyncio grpc client in a process
  of its own (`--grpc-load`): 32 calls in flight on one channel, each sent as soon as the previous
  one answered, the request serialized once (FP64 `raw_input_contents`, as tritonclient.grpc sends
  it), the same warm-up, duration and cap.
- Every request asks for the `predict` output only, so every server does the same work. Cells:
  batch 1 and batch 64 rows per request.
- Also: the HTTP floor (a bare handler returning constant JSON, on our transport and on uvicorn with
  a raw ASGI app), in-process predict() calls/s, and our server's peak RSS (VmHWM).

Results are printed as tables and written to ~/.cache/modelcycle/bench/serving-results.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(os.environ.get("MODELCYCLE_BENCH", Path.home() / ".cache" / "modelcycle" / "bench"))
HERE = Path(__file__).resolve().parent
MODEL_NAME = "bc"
MLSERVER_PACKAGES = ["mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop<0.22"]
KSERVE_PACKAGES = ["kserve"]

KSERVE_MODEL = '''
"""KServe server for the benchmark: a kserve.Model subclass loading the skops file (predict output)."""
import argparse
import uuid

import kserve
import numpy as np
import skops.io as sio
from kserve import InferOutput, InferRequest, InferResponse


class SkopsModel(kserve.Model):
    def __init__(self, name, path):
        super().__init__(name)
        self.path = path
        self.load()

    def load(self):
        self.model = sio.load(self.path, trusted=sio.get_untrusted_types(file=self.path))
        self.ready = True
        return self.ready

    def predict(self, payload, headers=None):
        if isinstance(payload, InferRequest):
            x = payload.inputs[0].as_numpy()
            result = np.asarray(self.model.predict(x))
            output = InferOutput(
                name="predict", shape=list(result.shape), datatype="INT64", data=result.tolist()
            )
            response_id = payload.id or str(uuid.uuid4())
            return InferResponse(model_name=self.name, infer_outputs=[output], response_id=response_id)
        return {"predictions": self.model.predict(np.asarray(payload["instances"])).tolist()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--model_path", required=True)
    args, _ = parser.parse_known_args()
    model = SkopsModel(args.model_name, args.model_path)
    kserve.ModelServer().start([model])
'''

FLOOR_UVICORN = """
import sys
import uvicorn

BODY = b'{"model_name":"bc","outputs":[{"name":"predict","datatype":"INT64","shape":[1],"data":[1]}]}'


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(BODY)).encode())]})
    await send({"type": "http.response.body", "body": BODY})


uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="httptools",
            log_level="warning", access_log=False)
"""


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(cmd: list[str], **kwargs: Any) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kwargs)


def ensure_venv(name: str, packages: list[str]) -> Path:
    import sklearn

    venv = BENCH / name
    python = venv / "bin" / "python"
    stamp = venv / ".bench-installed"
    want = json.dumps([*packages, f"scikit-learn=={sklearn.__version__}", "skops"])
    if not (stamp.exists() and stamp.read_text() == want):
        if not python.exists():
            run([sys.executable, "-m", "venv", str(venv)])
        run(
            [
                str(venv / "bin" / "pip"),
                "install",
                "-q",
                *packages,
                f"scikit-learn=={sklearn.__version__}",
                "skops",
            ]
        )
        stamp.write_text(want)
    return venv


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it was ready ({url})")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} not ready after {timeout}s")


def post_json(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return dict(json.loads(response.read()))


def process_tree(pid: int) -> list[int]:
    pids = [pid]
    with contextlib.suppress(OSError, ValueError):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        for child in children:
            pids += process_tree(int(child))
    return pids


def peak_rss_mb(pid: int) -> float:
    """VmHWM (peak resident set) of a process, in MB."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


# --------------------------------------------------------------------------- models


def build_models(directory: Path) -> dict[str, dict[str, Any]]:
    import hashlib

    import joblib
    import skops.io as sio
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_breast_cancer()
    estimators = {
        "lr": make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
        "rf": RandomForestClassifier(n_estimators=50, random_state=0),
    }
    out: dict[str, dict[str, Any]] = {}
    for key, estimator in estimators.items():
        estimator.fit(data.data, data.target)
        folder = directory / key
        folder.mkdir(parents=True, exist_ok=True)
        sio.dump(estimator, folder / "model.skops")
        digest = hashlib.sha256((folder / "model.skops").read_bytes()).hexdigest()
        metadata = {
            "features": [{"name": str(f), "dtype": "float64", "kind": "numeric"} for f in data.feature_names],
            "target": "target",
            "task": "classification",
            "classes": [0, 1],
            "sha256": digest,
        }
        (folder / "metadata.json").write_text(json.dumps(metadata))
        mlserver_dir = directory / f"mlserver-{key}"
        mlserver_dir.mkdir(exist_ok=True)
        joblib.dump(estimator, mlserver_dir / "model.joblib")
        out[key] = {"dir": folder, "mlserver_dir": mlserver_dir, "estimator": estimator}
    return out


def request_body(rows: np.ndarray) -> dict[str, Any]:
    return {
        "inputs": [{"name": "input-0", "shape": list(rows.shape), "datatype": "FP64", "data": rows.tolist()}],
        "outputs": [{"name": "predict"}],
    }


# --------------------------------------------------------------------------- servers


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    grpc_port: int | None = None
    infer_path: str = f"/v2/models/{MODEL_NAME}/infer"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def spawn(
    cmd: list[str], log: Path, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        cmd,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=cwd,
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )


@contextlib.contextmanager
def start_server(kind: str, model: dict[str, Any], logs: Path) -> Iterator[Server]:
    port = free_port()
    grpc_port = free_port()
    log = logs / f"{kind}.log"
    if kind in ("ours", "ours-logging"):
        cmd = [sys.executable, "-m", "modelcycle", "serve", "--model-dir", str(model["dir"])]
        if kind == "ours-logging":
            # Every request logged (sample rate 1.0) to a local store, default flush settings.
            store = Path(tempfile.mkdtemp(prefix="modelcycle-bench-logs-"))
            cmd += ["--store", str(store), "--log-sample-rate", "1", "--log-namespace", "bench"]
            cmd += ["--log-deployment", MODEL_NAME]
        cmd += [
            "--model-name",
            MODEL_NAME,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--grpc-port",
            str(grpc_port),
            "--log-level",
            "WARNING",
        ]
        proc = spawn(cmd, log)
        ready = f"http://127.0.0.1:{port}/v2/models/{MODEL_NAME}/ready"
    elif kind == "mlserver":
        venv = ensure_venv("mlserver", MLSERVER_PACKAGES)
        folder = Path(model["mlserver_dir"])
        settings = {
            "http_port": port,
            "grpc_port": grpc_port,
            "metrics_port": free_port(),
            "metrics_dir": str(folder / ".metrics"),
            "parallel_workers": 0,
        }
        (folder / "settings.json").write_text(json.dumps(settings))
        model_settings = {
            "name": MODEL_NAME,
            "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": "./model.joblib", "version": "1"},
        }
        (folder / "model-settings.json").write_text(json.dumps(model_settings))
        proc = spawn([str(venv / "bin" / "mlserver"), "start", str(folder)], log, cwd=folder)
        ready = f"http://127.0.0.1:{port}/v2/models/{MODEL_NAME}/ready"
    elif kind == "kserve":
        venv = ensure_venv("kserve", KSERVE_PACKAGES)
        script = BENCH / "kserve_model.py"
        script.write_text(KSERVE_MODEL)
        cmd = [str(venv / "bin" / "python"), str(script), "--model_name", MODEL_NAME]
        cmd += ["--model_path", str(Path(model["dir"]) / "model.skops")]
        cmd += ["--http_port", str(port), "--grpc_port", str(grpc_port)]
        proc = spawn(cmd, log, env={"PYTHONWARNINGS": "ignore"})
        ready = f"http://127.0.0.1:{port}/v2/models/{MODEL_NAME}/ready"
    elif kind == "floor-ours":
        proc = spawn([sys.executable, str(Path(__file__).resolve()), "--floor-server", str(port)], log)
        ready = f"http://127.0.0.1:{port}/v2/health/ready"
    elif kind == "floor-uvicorn":
        script = BENCH / "floor_uvicorn.py"
        script.write_text(FLOOR_UVICORN)
        proc = spawn([sys.executable, str(script), str(port)], log)
        ready = f"http://127.0.0.1:{port}/"
    else:
        raise ValueError(kind)
    server = Server(
        kind, proc, port, grpc_port if kind in ("ours", "ours-logging", "mlserver", "kserve") else None
    )
    try:
        wait_ready(ready, proc)
        if server.grpc_port is not None:
            wait_grpc_ready(server)
        yield server
    finally:
        server.stop()


def floor_server(port: int) -> None:
    """A bare handler on our HTTP transport: constant JSON, no protocol work."""
    import asyncio

    import uvloop

    from modelcycle.workloads.serve_http import HttpServer

    @dataclass
    class Constant:
        status: int = 200
        body: bytes = (
            b'{"model_name":"bc","outputs":[{"name":"predict","datatype":"INT64","shape":[1],"data":[1]}]}'
        )
        content_type: str = "application/json"
        headers: dict[str, str] = field(default_factory=dict)

    response = Constant()

    async def main() -> None:
        server = HttpServer(lambda *_: response)
        await server.start("127.0.0.1", port)
        await asyncio.Event().wait()

    uvloop.run(main())


# --------------------------------------------------------------------------- load


@dataclass
class Cell:
    server: str
    model: str
    batch: int
    protocol: str = "rest"
    requests: int = 0
    seconds: float = 0.0
    rps: float = 0.0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    errors: int = 0
    note: str = ""


def _ms(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}[unit]


def lua_script(body: dict[str, Any], max_requests: int) -> str:
    payload = json.dumps(body, separators=(",", ":"))
    return (
        'wrk.method = "POST"\n'
        f"wrk.body = [==[{payload}]==]\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        "local count = 0\n"
        f"local limit = {max_requests}\n"
        "response = function(status, headers, body)\n"
        "  count = count + 1\n"
        "  if count >= limit then wrk.thread:stop() end\n"
        "end\n"
    )


def drive(
    server: Server, body: dict[str, Any], *, duration: float, connections: int, max_requests: int, cell: Cell
) -> Cell:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(lua_script(body, max_requests))
        script = fh.name
    url = server.url + server.infer_path
    base = ["wrk", "-t1", f"-c{connections}", "--latency", "-s", script]
    subprocess.run([*base, "-d2s", url], check=True, capture_output=True)  # warm-up
    started = time.monotonic()
    out = subprocess.run([*base, f"-d{duration:g}s", url], check=True, capture_output=True, text=True).stdout
    cell.seconds = time.monotonic() - started
    os.unlink(script)
    if m := re.search(r"(\d+) requests in ([\d.]+)(\w+)", out):
        cell.requests = int(m.group(1))
    if m := re.search(r"Requests/sec:\s+([\d.]+)", out):
        cell.rps = float(m.group(1))
    if m := re.search(r"^\s+50%\s+(\S+)", out, re.M):
        cell.p50_ms = _ms(m.group(1))
    if m := re.search(r"^\s+99%\s+(\S+)", out, re.M):
        cell.p99_ms = _ms(m.group(1))
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        cell.errors += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        cell.errors += sum(int(g) for g in m.groups())
    return cell


# --------------------------------------------------------------------------- gRPC

INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"


def grpc_request(rows: np.ndarray) -> bytes:
    """A serialized ModelInferRequest: `[B, 30]` FP64 in raw_input_contents, the `predict` output."""
    from modelcycle.workloads.oip import inference_pb2 as pb

    request = pb.ModelInferRequest(model_name=MODEL_NAME)
    request.inputs.add(name="input-0", datatype="FP64", shape=list(rows.shape))
    request.raw_input_contents.append(np.ascontiguousarray(rows, dtype="<f8").tobytes())
    request.outputs.add(name="predict")
    return request.SerializeToString()


def wait_grpc_ready(server: Server, timeout: float = 60.0) -> None:
    import grpc

    from modelcycle.workloads.oip import inference_pb2 as pb
    from modelcycle.workloads.oip import inference_pb2_grpc as pb_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        while True:
            try:
                if stub.ServerReady(pb.ServerReadyRequest(), timeout=2).ready:
                    return
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.3)


def grpc_predictions(server: Server, rows: np.ndarray) -> np.ndarray:
    """The `predict` output of one gRPC call, raw or typed, whichever the server answers with."""
    import grpc

    from modelcycle.workloads.oip import inference_pb2 as pb

    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        call = channel.unary_unary(INFER_METHOD, response_deserializer=pb.ModelInferResponse.FromString)
        response = call(grpc_request(rows), timeout=30)
    index = next(i for i, o in enumerate(response.outputs) if o.name == "predict")
    output = response.outputs[index]
    if response.raw_output_contents:
        dtype = {"INT64": "<i8", "INT32": "<i4", "FP64": "<f8", "FP32": "<f4", "BOOL": "?"}[output.datatype]
        return np.frombuffer(response.raw_output_contents[index], dtype=dtype)
    contents = output.contents
    return np.asarray(
        next(list(f) for f in (contents.int64_contents, contents.int_contents, contents.fp64_contents) if f)
    )


async def grpc_load(
    target: str, payload: bytes, *, duration: float, concurrency: int, max_requests: int
) -> dict[str, Any]:
    """`concurrency` calls in flight on one channel for `duration` s (or `max_requests` calls)."""
    import grpc

    latencies: list[float] = []
    errors = 0
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(INFER_METHOD)  # bytes in, bytes out: no client-side protobuf work
        await call(payload, timeout=30)
        stop_at = time.perf_counter() + duration

        async def worker() -> None:
            nonlocal errors
            while len(latencies) + errors < max_requests:
                started = time.perf_counter()
                if started >= stop_at:
                    return
                try:
                    await call(payload, timeout=30)
                except grpc.RpcError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - started)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    ordered = np.sort(np.asarray(latencies)) * 1e3
    pick = (lambda q: float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])) if len(ordered) else None
    return {
        "requests": len(latencies),
        "errors": errors,
        "seconds": elapsed,
        "rps": len(latencies) / elapsed,
        "p50_ms": pick(0.50) if pick else float("nan"),
        "p99_ms": pick(0.99) if pick else float("nan"),
    }


def drive_grpc(
    server: Server, payload: bytes, *, duration: float, connections: int, max_requests: int, cell: Cell
) -> Cell:
    """Run the gRPC load generator in a process of its own (as wrk is), after a 2 s warm-up."""
    with tempfile.NamedTemporaryFile("wb", suffix=".bin", delete=False) as fh:
        fh.write(payload)
        path = fh.name
    base = [sys.executable, str(Path(__file__).resolve()), "--grpc-load", f"127.0.0.1:{server.grpc_port}"]
    base += ["--payload", path, "--connections", str(connections), "--max-requests", str(max_requests)]
    try:
        subprocess.run([*base, "--duration", "2"], check=True, capture_output=True)  # warm-up
        out = subprocess.run(
            [*base, "--duration", f"{duration:g}"], check=True, capture_output=True, text=True
        ).stdout
    finally:
        os.unlink(path)
    result = json.loads(out)
    cell.requests, cell.errors, cell.seconds = result["requests"], result["errors"], result["seconds"]
    cell.rps, cell.p50_ms, cell.p99_ms = result["rps"], result["p50_ms"], result["p99_ms"]
    return cell


def versions(venv: Path, packages: list[str]) -> str:
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format", "json"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    found = {p["name"].lower(): p["version"] for p in json.loads(out or "[]")}
    return ", ".join(f"{name} {found.get(name, '?')}" for name in packages)


def check_predictions(server: Server, model: dict[str, Any], rows: np.ndarray, protocol: str) -> None:
    """Every server must answer correctly before it is timed."""
    if protocol == "grpc":
        got = grpc_predictions(server, rows)
    else:
        answer = post_json(server.url + server.infer_path, request_body(rows))
        output = next(o for o in answer["outputs"] if o["name"] == "predict")
        got = np.asarray(output["data"]).reshape(-1)
    expected = model["estimator"].predict(rows)
    if not np.array_equal(got.astype(np.int64), expected):
        raise AssertionError(f"{server.name} ({protocol}) predicted {got[:10]} instead of {expected[:10]}")


def in_process(model: dict[str, Any], rows: np.ndarray) -> dict[str, float]:
    from modelcycle.workloads import serve_model

    served = serve_model.load_model_dir(Path(model["dir"]), name=MODEL_NAME, version="1")
    out: dict[str, float] = {}
    for label, fn in (
        ("sklearn", lambda x: model["estimator"].predict(x)),
        ("ours", lambda x: served.predict(x, proba=False)),
    ):
        for batch in (1, 64):
            x = rows[:batch]
            calls, started = 0, time.perf_counter()
            while time.perf_counter() - started < 1.5:
                fn(x)
                calls += 1
            out[f"{label}_b{batch}_calls_per_s"] = calls / (time.perf_counter() - started)
    return out


# --------------------------------------------------------------------------- report


def fmt(value: float, digits: int = 1) -> str:
    return "-" if value != value else f"{value:,.{digits}f}"


PEERS = ("mlserver", "kserve")


def print_tables(cells: list[Cell]) -> None:
    """One table per protocol, model and batch; ratios against the best peer of that cell (the most
    req/s, and separately the lowest p99)."""
    groups: dict[tuple[str, str, int], list[Cell]] = {}
    for c in cells:
        groups.setdefault((c.protocol, c.model, c.batch), []).append(c)
    for (protocol, model, batch), group in groups.items():
        peers = [c for c in group if c.server in PEERS and c.rps > 0]
        best_rps = max((c.rps for c in peers), default=float("nan"))
        best_p99 = min((c.p99_ms for c in peers), default=float("nan"))
        print(f"\n### {protocol}, {model}, batch {batch}, 32 connections / calls in flight")
        print(
            "| server | req/s | rows/s | p50 ms | p99 ms | errors | req/s vs best peer | p99 vs best peer |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for c in group:
            ratio, p99 = c.rps / best_rps, c.p99_ms / best_p99
            print(
                f"| {c.server} | {fmt(c.rps, 0)} | {fmt(c.rps * batch, 0)} | {fmt(c.p50_ms, 2)} | "
                f"{fmt(c.p99_ms, 2)} | {c.errors} | {fmt(ratio, 2)}x | {fmt(p99, 2)}x |"
            )


def print_logging_overhead(cells: list[Cell]) -> None:
    """`ours-logging` (inference logging at sample rate 1.0) against `ours` in the same run: the
    issue-13 targets are at least 0.85x the throughput and at most +20% p99 (batch 1, 32 in flight)."""
    plain = {(c.protocol, c.model, c.batch): c for c in cells if c.server == "ours"}
    logged = [c for c in cells if c.server == "ours-logging" and (c.protocol, c.model, c.batch) in plain]
    if not logged:
        return
    print("\n### inference logging at sample rate 1.0 vs off (same run)")
    print("| protocol | model | batch | req/s off | req/s on | ratio | p99 off ms | p99 on ms | p99 growth |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for c in logged:
        base = plain[(c.protocol, c.model, c.batch)]
        ratio = c.rps / base.rps if base.rps else float("nan")
        growth = c.p99_ms / base.p99_ms - 1 if base.p99_ms else float("nan")
        print(
            f"| {c.protocol} | {c.model} | {c.batch} | {fmt(base.rps, 0)} | {fmt(c.rps, 0)} | "
            f"{fmt(ratio, 2)}x | {fmt(base.p99_ms, 2)} | {fmt(c.p99_ms, 2)} | {growth * 100:+.0f}% |"
        )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per cell (default 10)")
    parser.add_argument("--max-requests", type=int, default=2_000_000, help="request cap per cell")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--servers",
        default="ours,mlserver,kserve",
        help="ours, ours-logging (inference logging at sample rate 1.0), mlserver, kserve",
    )
    parser.add_argument("--models", default="lr,rf")
    parser.add_argument("--batches", default="1,64")
    parser.add_argument("--protocols", default="rest,grpc", help="rest, grpc or both (default)")
    parser.add_argument("--no-floor", action="store_true", help="skip the HTTP floor cells")
    parser.add_argument("--floor-server", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--grpc-load", metavar="HOST:PORT", help=argparse.SUPPRESS)
    parser.add_argument("--payload", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor_server:
        floor_server(args.floor_server)
        return 0
    if args.grpc_load:
        result = asyncio.run(
            grpc_load(
                args.grpc_load,
                args.payload.read_bytes(),
                duration=args.duration,
                concurrency=args.connections,
                max_requests=args.max_requests,
            )
        )
        print(json.dumps(result))
        return 0
    protocols = args.protocols.split(",")
    if "rest" in protocols and shutil.which("wrk") is None:
        print("wrk is missing: apt-get install -y wrk (or --protocols grpc)", file=sys.stderr)
        return 2
    BENCH.mkdir(parents=True, exist_ok=True)
    logs = BENCH / "logs"
    logs.mkdir(exist_ok=True)
    models = build_models(BENCH / "models")
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer().data
    servers = args.servers.split(",")
    batches = [int(b) for b in args.batches.split(",")]
    cells: list[Cell] = []
    extra: dict[str, Any] = {"peakRssMB": {}, "inProcess": {}, "failures": {}}
    for key in args.models.split(","):
        model = models[key]
        extra["inProcess"][key] = in_process(model, data)
        for kind in servers:
            try:
                with start_server(kind, model, logs) as server:
                    for protocol in protocols:
                        check_predictions(server, model, data[:64], protocol)
                        for batch in batches:
                            cell = Cell(kind, key, batch, protocol)
                            run_cell = drive_grpc if protocol == "grpc" else drive
                            payload: Any = (
                                grpc_request(data[:batch])
                                if protocol == "grpc"
                                else request_body(data[:batch])
                            )
                            run_cell(
                                server,
                                payload,
                                duration=args.duration,
                                connections=args.connections,
                                max_requests=args.max_requests,
                                cell=cell,
                            )
                            cells.append(cell)
                            print(
                                f"{kind:10s} {protocol:4s} {key} b{batch}: {cell.rps:,.0f} req/s "
                                f"p99 {cell.p99_ms:.2f} ms",
                                flush=True,
                            )
                    rss = sum(peak_rss_mb(p) for p in process_tree(server.proc.pid))
                    extra["peakRssMB"][f"{kind}-{key}"] = rss
            except Exception as exc:
                extra["failures"][f"{kind}-{key}"] = f"{type(exc).__name__}: {exc}"
                print(
                    f"{kind} {key}: FAILED {exc} (log: {logs / (kind + '.log')})", file=sys.stderr, flush=True
                )
    if not args.no_floor and "rest" in protocols:
        for kind in ("floor-ours", "floor-uvicorn"):
            with start_server(kind, {}, logs) as server:
                cell = Cell(kind, "none", 1)
                drive(
                    server,
                    request_body(data[:1]),
                    duration=args.duration,
                    connections=args.connections,
                    max_requests=args.max_requests,
                    cell=cell,
                )
                cells.append(cell)
                print(f"{kind:10s}: {cell.rps:,.0f} req/s p99 {cell.p99_ms:.2f} ms", flush=True)
    print_tables(cells)
    print_logging_overhead(cells)
    print("\n### in-process predict() calls/s")
    for key, values in extra["inProcess"].items():
        print(f"- {key}: " + ", ".join(f"{k} {v:,.0f}" for k, v in values.items()))
    print("\n### peers")
    for name, packages in (("mlserver", ["mlserver", "mlserver-sklearn"]), ("kserve", ["kserve"])):
        if name in servers:
            extra.setdefault("peerVersions", {})[name] = versions(BENCH / name, [*packages, "grpcio"])
            print(f"- {name}: {extra['peerVersions'][name]}")
    print("\n### peak RSS (VmHWM, MB, server process tree)")
    for key, value in extra["peakRssMB"].items():
        print(f"- {key}: {value:.0f}")
    if extra["failures"]:
        print("\n### failures")
        for key, value in extra["failures"].items():
            print(f"- {key}: {value}")
    load = os.getloadavg()
    print(
        f"\nmachine: {os.cpu_count()} CPUs, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} at the end"
    )
    results = {
        "cells": [asdict(c) for c in cells],
        **extra,
        "duration": args.duration,
        "cpus": os.cpu_count(),
        "loadAverage": load,
    }
    (BENCH / "serving-results.json").write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
