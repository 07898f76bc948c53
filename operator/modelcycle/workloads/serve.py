"""`modelcycle serve`: serve one model version over the Open Inference Protocol v2 (REST and gRPC).

    modelcycle serve --model-dir DIR --model-name NAME --model-version N [--port 8080]
    modelcycle serve --artifact-uri pvc://models/ns/iris/v3/model.skops --sha256 HEX --model-name iris ...

The model is loaded once (sha256 checked, safe skops load); `metadata.json` is read from the same
directory. REST listens on `--port`, gRPC (`inference.GRPCInferenceService`) on `--grpc-port`; both
share the model, micro-batching, statistics and limits. With `--reference-profile`, live feature
values are counted over the profile's bins for drift (`GET /v2/models/{name}/drift`, `/stats`,
`/metrics`). SIGTERM or SIGINT: readiness fails at
once; after `--drain-delay` seconds of still answering (a second signal cuts it short), stop
accepting, answer the requests already received, exit 0. Endpoints and the `/stats` contract:
docs/serving.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from modelcycle.errors import UserError

log = logging.getLogger("modelcycle.serve")
GRPC_PORT = 8081


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


LIMIT_HELP = {
    "max_body_bytes": "largest request body (REST, also after decompression) or message (gRPC) accepted "
    "(default 16 MiB; larger: 413 or RESOURCE_EXHAUSTED)",
    "max_request_line_bytes": "longest request target, path and query (default 8 KiB; longer: 414)",
    "max_header_bytes": "longest single header, name and value (default 8 KiB; longer: 431)",
    "max_headers_total_bytes": "most bytes of all headers together (default 32 KiB; more: 431)",
    "max_headers": "most header fields (default 100; more: 431)",
}
"""One flag per field of serve_http.Limits (`--max-headers` for max_headers), defaults from it."""


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be above 0")
    return value


def log_config(args: argparse.Namespace, model_name: str) -> Any:
    """The inference logger's settings, or None when logging is off (exit 2 on a bad store)."""
    if args.log_sample_rate <= 0:
        return None
    from modelcycle.workloads import inputs, store
    from modelcycle.workloads.results import InvalidSpec, WorkloadError
    from modelcycle.workloads.serve_logging import LogConfig

    namespace = args.log_namespace or os.environ.get("POD_NAMESPACE") or "default"
    deployment = args.log_deployment or model_name
    try:
        inputs.name(namespace, "--log-namespace", label=True)
        inputs.name(deployment, "--log-deployment")
        opened = store.open_store(args.store)
    except (InvalidSpec, WorkloadError) as exc:
        raise UserError(str(exc)) from exc
    return LogConfig(
        store=opened,
        namespace=namespace,
        deployment=deployment,
        sample_rate=args.log_sample_rate,
        flush_interval=args.log_flush_seconds,
        segment_rows=args.log_segment_rows,
        buffer_rows=args.log_buffer_rows,
    )


def _grpc_port(text: str) -> int | None:
    if text == "off":
        return None
    try:
        return _non_negative_int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError("must be a port number, 0 (any free port) or off") from exc


def configure(parser: argparse.ArgumentParser) -> None:
    source = parser.add_argument_group("model (one of)")
    source.add_argument("--model-dir", type=Path, help="directory with the .skops file and metadata.json")
    source.add_argument(
        "--artifact-uri",
        "--model-uri",
        dest="artifact_uri",
        help="URI of the .skops file (pvc://, s3://, file://); needs --sha256",
    )
    parser.add_argument("--sha256", help="expected sha256 of the .skops file (required with --artifact-uri)")
    parser.add_argument(
        "--store", help="artifact store for pvc:// URIs (default: $MODELCYCLE_STORE or /artifacts)"
    )
    parser.add_argument("--model-name", required=True, help="name the model is served under")
    parser.add_argument("--model-version", default="1", help="version the model is served under (default 1)")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    parser.add_argument(
        "--port", type=_non_negative_int, default=8080, help="port (default 8080; 0: any free)"
    )
    parser.add_argument(
        "--grpc-port",
        type=_grpc_port,
        default=GRPC_PORT,
        help=f"gRPC port (default {GRPC_PORT}; 0: any free; off: no gRPC)",
    )
    parser.add_argument(
        "--max-batch-size", type=_positive_int, default=64, help="most rows in one predict call (default 64)"
    )
    parser.add_argument(
        "--max-delay-us",
        "--max-batch-delay-us",
        dest="max_delay_us",
        type=_non_negative_int,
        default=2000,
        help="longest a request waits for batch-mates, microseconds (default 2000)",
    )
    parser.add_argument("--reference-profile", help="training-data profile JSON (path or URI) for drift")
    parser.add_argument(
        "--drift-window", type=_positive_int, default=10_000, help="live rows kept for drift (default 10000)"
    )
    parser.add_argument("--drift-method", choices=["ks", "chi2", "psi", "jsd"], default="ks")
    parser.add_argument("--drift-threshold", type=float, default=0.05)
    parser.add_argument("--drift-min-samples", type=_positive_int, default=200)
    parser.add_argument("--drift-correction", choices=["holm", "bh", "none"], default="holm")
    parser.add_argument(
        "--feedback-window", type=_positive_int, default=10_000, help="labelled rows kept (default 10000)"
    )
    logging_ = parser.add_argument_group("inference logging (docs/serving.md)")
    logging_.add_argument(
        "--log-sample-rate",
        type=_rate,
        default=0.0,
        help="share of requests logged to the artifact store, 0 to 1 (default 0: off); feedback "
        "labels are logged whenever this is above 0",
    )
    logging_.add_argument(
        "--log-deployment",
        help="ModelDeployment the logs are filed under (default: the model name)",
    )
    logging_.add_argument(
        "--log-namespace", help="namespace the logs are filed under (default: $POD_NAMESPACE or default)"
    )
    logging_.add_argument(
        "--log-flush-seconds",
        type=_positive_float,
        default=10.0,
        help="write a segment this often (default 10)",
    )
    logging_.add_argument(
        "--log-segment-rows", type=_positive_int, default=10_000, help="most rows per segment (default 10000)"
    )
    logging_.add_argument(
        "--log-buffer-rows",
        type=_positive_int,
        default=100_000,
        help="most rows held in memory; more are dropped and counted (default 100000)",
    )
    from modelcycle.workloads.serve_http import Limits

    limits = parser.add_argument_group("request limits (docs/serving.md)")
    defaults = Limits()
    for field, what in LIMIT_HELP.items():
        flag = "--" + field.replace("_", "-")
        limits.add_argument(flag, type=_positive_int, default=getattr(defaults, field), help=what)
    parser.add_argument(
        "--predict-thread",
        choices=["yes", "no"],
        default="no",
        help="run predict calls on the event loop (no, the default: fastest, see benchmarks/README.md) "
        "or in a worker thread (yes: the loop keeps answering health checks during long predicts)",
    )
    parser.add_argument(
        "--drain-delay",
        type=float,
        default=0.0,
        help="seconds to keep accepting requests after SIGTERM, with readiness already failing, so "
        "load balancers stop routing here before the listener closes (Kubernetes removes a "
        "terminating pod from Service endpoints asynchronously)",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        default=30.0,
        help="seconds to answer in-flight requests once no longer accepting",
    )
    parser.add_argument(
        "--keepalive-timeout", type=float, default=75.0, help="close idle keep-alive connections (seconds)"
    )
    parser.add_argument(
        "--request-timeout", type=float, default=60.0, help="408 for a request not received in time (seconds)"
    )
    parser.add_argument("--log-level", default=os.environ.get("MODELCYCLE_LOG_LEVEL", "INFO"))


def _fetch(uri: str, store_spec: str | None) -> bytes:
    from modelcycle.workloads import store
    from modelcycle.workloads.results import WorkloadError

    try:
        opened = None
        if uri.startswith("pvc://"):
            opened = store.open_store(store_spec)
        return store.read_uri(uri, opened)
    except WorkloadError as exc:
        raise UserError(str(exc)) from exc


def load_profile(spec: str, store_spec: str | None) -> dict[str, Any]:
    if "://" in spec:
        raw = _fetch(spec, store_spec)
    else:
        try:
            raw = Path(spec).read_bytes()
        except OSError as exc:
            raise UserError(f"cannot read the reference profile {spec}: {exc.strerror or exc}") from exc
    try:
        profile = json.loads(raw)
    except ValueError as exc:
        raise UserError(f"reference profile {spec} is not JSON: {exc}") from exc
    if not isinstance(profile, dict) or not isinstance(profile.get("features"), list):
        raise UserError(f"reference profile {spec} has no `features` list")
    from modelcycle.workloads import drift

    try:
        drift.feature_bins(profile)
    except (ValueError, TypeError, KeyError) as exc:
        raise UserError(f"reference profile {spec}: {exc}") from exc
    return profile


def profile_from_metadata(metadata: dict[str, Any], store_spec: str | None) -> dict[str, Any] | None:
    """The training profile that metadata.json points to (training records it), or None.

    A profile that cannot be read only disables drift: the model is still served.
    """
    ref = metadata.get("profile")
    uri = ref.get("uri") if isinstance(ref, dict) else None
    if not isinstance(uri, str) or not uri:
        log.info("no reference profile: drift detection is off (pass --reference-profile to enable it)")
        return None
    try:
        raw = _fetch(uri, store_spec)
        expected = ref.get("sha256") if isinstance(ref, dict) else None
        if isinstance(expected, str) and expected:
            import hashlib

            actual = hashlib.sha256(raw).hexdigest()
            if actual != expected.lower():
                raise UserError(f"sha256 is {actual}, expected {expected}")
        profile = json.loads(raw)
        if not isinstance(profile, dict):
            raise UserError("not a JSON object")
        from modelcycle.workloads import drift

        drift.feature_bins(profile)
    except (UserError, ValueError, TypeError, KeyError) as exc:
        log.warning("the model's reference profile %s is unusable (%s): drift detection is off", uri, exc)
        return None
    log.info("reference profile: %s", uri)
    return profile


def check_inputs(args: argparse.Namespace) -> None:
    """The names and the URI the server is given: Kubernetes names, no path that climbs out (exit 2)."""
    from modelcycle.workloads import inputs
    from modelcycle.workloads.results import InvalidSpec

    try:
        inputs.name(args.model_name, "--model-name", label=True)
        inputs.name(str(args.model_version), "--model-version", label=True)
        if args.artifact_uri is not None:
            inputs.artifact_uri(args.artifact_uri, "--artifact-uri")
    except InvalidSpec as exc:
        raise UserError(exc.message) from exc


def load_model(args: argparse.Namespace) -> Any:
    from modelcycle.workloads import serve_model

    if (args.model_dir is None) == (args.artifact_uri is None):
        raise UserError("give exactly one of --model-dir and --artifact-uri")
    check_inputs(args)
    if args.model_dir is not None:
        return serve_model.load_model_dir(
            args.model_dir, name=args.model_name, version=str(args.model_version), expected_sha256=args.sha256
        )
    if not args.sha256:
        raise UserError("--artifact-uri needs --sha256 (the model is verified before it is loaded)")
    from modelcycle.workloads import store

    model_bytes = _fetch(args.artifact_uri, args.store)
    digest = store.sha256_bytes(model_bytes)
    if digest != args.sha256.lower():
        raise UserError(f"{args.artifact_uri}: sha256 is {digest}, expected {args.sha256}")
    metadata = _fetch(store.sibling_uri(args.artifact_uri, "metadata.json"), args.store)
    with tempfile.TemporaryDirectory(prefix="modelcycle-serve-") as tmp:
        name = args.artifact_uri.rsplit("/", 1)[-1] or "model.skops"
        if not name.endswith(serve_model.MODEL_SUFFIX):
            name += serve_model.MODEL_SUFFIX
        (Path(tmp) / name).write_bytes(model_bytes)
        (Path(tmp) / "metadata.json").write_bytes(metadata)
        return serve_model.load_model_dir(
            Path(tmp), name=args.model_name, version=str(args.model_version), expected_sha256=digest
        )


async def serve(args: argparse.Namespace, model: Any, profile: dict[str, Any] | None) -> int:
    from modelcycle.workloads.serve_app import DriftConfig, InferenceApp
    from modelcycle.workloads.serve_http import HttpServer, Limits

    executor = (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")
        if args.predict_thread == "yes"
        else None
    )
    app = InferenceApp(
        model,
        profile=profile,
        drift_window=args.drift_window,
        drift_config=DriftConfig(
            method=args.drift_method,
            threshold=args.drift_threshold,
            min_samples=args.drift_min_samples,
            correction=args.drift_correction,
        ),
        max_batch_size=args.max_batch_size,
        max_delay=args.max_delay_us / 1e6,
        executor=executor,
        max_body_bytes=args.max_body_bytes,
        feedback_window=args.feedback_window,
        log_config=log_config(args, model.name),
    )
    server = HttpServer(
        app.handle,
        limits=Limits(**{field: getattr(args, field) for field in LIMIT_HELP}),
        keepalive_timeout=args.keepalive_timeout,
        request_timeout=args.request_timeout,
        on_refused=app.refused,
    )
    grpc_server = None
    if args.grpc_port is not None:
        from modelcycle.workloads.serve_grpc import GrpcServer

        grpc_server = GrpcServer(app, max_message_bytes=args.max_body_bytes)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        port = await server.start(args.host, args.port)
    except OSError as exc:
        raise UserError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from exc
    grpc_port = None
    if grpc_server is not None:
        try:
            grpc_port = await grpc_server.start(args.host, args.grpc_port)
        except OSError as exc:
            await server.shutdown(0)
            raise UserError(f"cannot listen for gRPC on {args.host}:{args.grpc_port}: {exc}") from exc
    app.start()
    log.info(
        "serving model %s version %s (sha256 %s) on http://%s:%d%s",
        model.name,
        model.version,
        model.sha256[:12],
        args.host,
        port,
        "" if grpc_port is None else f" and gRPC {args.host}:{grpc_port}",
    )
    event = {"event": "listening", "host": args.host, "port": port, "grpcPort": grpc_port}
    print(json.dumps(event), flush=True)
    await stop.wait()
    app.ready = False
    if args.drain_delay > 0:
        log.info("not ready; still answering for %gs so traffic moves elsewhere first", args.drain_delay)
        stop.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), args.drain_delay)
    log.info("shutting down: answering in-flight requests")
    grpc_stopped = asyncio.sleep(0) if grpc_server is None else grpc_server.shutdown(args.shutdown_timeout)
    clean, _ = await asyncio.gather(server.shutdown(args.shutdown_timeout), grpc_stopped)
    await app.close()
    if executor is not None:
        executor.shutdown(wait=True)
    log.info("stopped (%s)", "clean" if clean else "connections aborted after the timeout")
    return 0


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=str(args.log_level).upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    import prometheus_client

    prometheus_client.disable_created_metrics()  # the *_created series only add noise here
    model = load_model(args)
    profile: dict[str, Any] | None
    if args.reference_profile:
        profile = load_profile(args.reference_profile, args.store)
    else:
        profile = profile_from_metadata(model.metadata, args.store)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; plain asyncio still works
        return asyncio.run(serve(args, model, profile))
    with contextlib.suppress(KeyboardInterrupt):
        return uvloop.run(serve(args, model, profile))
    return 130
