"""`modelcycle validate`: verify a ModelVersion's artifact, evaluate it on the holdout rows, apply its gates.

    modelcycle validate --spec FILE|- | --spec-json JSON [--store STORE] [--namespace NS]
                        [--production-version N --production-metrics JSON] [--publish]
                        [--termination-log PATH]

Order: sha256 of the artifact, then the skops format and trusted types (safeload), then the
holdout evaluation on `spec.lineage.datasetUri` with `spec.lineage.split`, then the gates, then
latency. A version that fails a gate is a successful validation with `validated: false` (exit 0);
a refused artifact or missing data is a failure (`ok: false`, non-zero exit).

`--publish` copies a Validated artifact to `models/<namespace>/<model>/v<spec.version>/`
(model.skops, then metadata.json); an existing `v<N>/model.skops` with other content is refused
(VersionConflict), the same content is left as is.
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from modelcycle.api import modelversion as api
from modelcycle.api.common import Gates, Split
from modelcycle.workloads import inputs, safeload, specfile
from modelcycle.workloads import metrics as metrics_mod
from modelcycle.workloads import snapshot as snap_mod
from modelcycle.workloads import store as store_mod
from modelcycle.workloads.results import InvalidSpec, WorkloadError, add_common_arguments, run_workload
from modelcycle.workloads.train import METADATA_FILE, MODEL_FILE, version_key

log = logging.getLogger("modelcycle.workloads.validate")


def configure(parser: argparse.ArgumentParser) -> None:
    specfile.add_spec_arguments(parser, "ModelVersion")
    store_mod.add_store_argument(parser)
    parser.add_argument(
        "--namespace", metavar="NS", help="namespace of the version (default: metadata.namespace)"
    )
    parser.add_argument(
        "--production-metrics",
        metavar="JSON",
        help='metrics of the version in production, a JSON object such as {"accuracy": 0.95}',
    )
    parser.add_argument("--production-version", type=int, metavar="N", help="the version in production")
    parser.add_argument(
        "--production-artifact-uri",
        metavar="URI",
        help="the production version's artifact: it is evaluated on this version's holdout rows and "
        "mustBeatProduction compares on those (needs --production-artifact-sha256 and --production-version)",
    )
    parser.add_argument("--production-artifact-sha256", metavar="HEX", help="its sha256 (checked)")
    parser.add_argument(
        "--publish", action="store_true", help="copy a Validated artifact to models/<ns>/<model>/v<N>/"
    )
    add_common_arguments(parser)


def _production(args: argparse.Namespace) -> tuple[int, dict[str, float]] | None:
    if args.production_metrics is None and args.production_version is None:
        return None
    if args.production_metrics is None or args.production_version is None:
        raise InvalidSpec("--production-metrics and --production-version go together")
    try:
        values = json.loads(args.production_metrics)
    except ValueError as exc:
        raise InvalidSpec(f"--production-metrics is not JSON: {exc}") from exc
    if not isinstance(values, dict) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in values.values()
    ):
        raise InvalidSpec("--production-metrics must be a JSON object of numbers")
    return args.production_version, {str(k): float(v) for k, v in values.items()}


def run(args: argparse.Namespace) -> int:
    def body() -> dict[str, Any]:
        spec, meta = specfile.load(args, "ModelVersion", api.ModelVersionSpec)
        production = _production(args)
        store = store_mod.open_store(args.store)
        namespace = args.namespace or meta.get("namespace") or "default"
        champion = None
        if args.production_artifact_uri:
            if not args.production_artifact_sha256 or args.production_version is None:
                raise InvalidSpec(
                    "--production-artifact-uri needs --production-artifact-sha256 and --production-version"
                )
            champion = (args.production_artifact_uri, args.production_artifact_sha256)
        return validate(
            spec, store, namespace=namespace, production=production, publish=args.publish, champion=champion
        )

    return run_workload(args, body)


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def apply_gates(
    metrics: dict[str, float],
    gates: Gates | None,
    production: tuple[int, dict[str, float]] | None = None,
) -> tuple[bool, list[str], dict[str, Any] | None]:
    """(passed, reasons, production comparison). Reasons list failures if any, else what passed."""
    failures: list[str] = []
    notes: list[str] = []
    comparison: dict[str, Any] | None = None
    gates = gates or Gates()
    for metric, low in sorted((gates.min or {}).items()):
        value = metrics.get(metric)
        if value is None:
            failures.append(f"gate min.{metric}: the metric {metric} was not computed for this model")
        elif value < low:
            failures.append(f"{metric} {_fmt(value)} is below the minimum {_fmt(low)}")
        else:
            notes.append(f"{metric} {_fmt(value)} >= min {_fmt(low)}")
    for metric, high in sorted((gates.max or {}).items()):
        value = metrics.get(metric)
        if value is None:
            failures.append(f"gate max.{metric}: the metric {metric} was not computed for this model")
        elif value > high:
            failures.append(f"{metric} {_fmt(value)} is above the maximum {_fmt(high)}")
        else:
            notes.append(f"{metric} {_fmt(value)} <= max {_fmt(high)}")
    rule = gates.must_beat_production
    if rule is not None:
        metric = rule.metric
        candidate = metrics.get(metric)
        if production is None:
            notes.append("mustBeatProduction: no version in production to compare with")
        elif candidate is None:
            failures.append(f"mustBeatProduction: the metric {metric} was not computed for this model")
        elif metric not in production[1]:
            failures.append(f"mustBeatProduction: production version {production[0]} has no metric {metric}")
        else:
            version, values = production
            prod = values[metric]
            comparison = {"version": version, "metric": metric, "production": prod, "candidate": candidate}
            lower = metrics_mod.lower_is_better(metric)
            passed = candidate <= prod + rule.tolerance if lower else candidate >= prod - rule.tolerance
            relation = "lower" if lower else "higher"
            text = (
                f"{metric} {_fmt(candidate)} vs production v{version} {_fmt(prod)} "
                f"({relation} is better, tolerance {_fmt(rule.tolerance)})"
            )
            (notes if passed else failures).append(("beats " if passed else "does not beat: ") + text)
    if not failures and not notes:
        notes.append("no gates configured")
    return (not failures), (failures or notes), comparison


def _publish(
    store: store_mod.ArtifactStore,
    spec: api.ModelVersionSpec,
    namespace: str,
    artifact: bytes,
) -> str:
    model_key = version_key(namespace, spec.model, spec.version, MODEL_FILE)
    metadata_key = version_key(namespace, spec.model, spec.version, METADATA_FILE)
    if store.exists(model_key):
        existing = store_mod.sha256_bytes(store.get_bytes(model_key))
        if existing != spec.artifact.sha256:
            raise WorkloadError(
                f"{store.uri_for(model_key)} already holds another artifact (sha256 {existing}); "
                f"version {spec.version} of {spec.model} is taken",
                reason="VersionConflict",
            )
    try:
        source_meta = json.loads(
            store_mod.read_uri(store_mod.sibling_uri(spec.artifact.uri, METADATA_FILE), store)
        )
        if not isinstance(source_meta, dict):
            source_meta = {}
    except (WorkloadError, ValueError):
        source_meta = {}
    metadata = {
        **source_meta,
        "format": "skops",
        "file": MODEL_FILE,
        "sha256": spec.artifact.sha256,
        "model": spec.model,
        "namespace": namespace,
        "publishedVersion": spec.version,
        "sourceUri": spec.artifact.uri,
    }
    uri = store.put_bytes(model_key, artifact)
    store.put_bytes(metadata_key, json.dumps(metadata, indent=2, allow_nan=False).encode("utf-8"))
    return uri


def validate(
    spec: api.ModelVersionSpec,
    store: store_mod.ArtifactStore,
    *,
    namespace: str = "default",
    production: tuple[int, dict[str, float]] | None = None,
    publish: bool = False,
    champion: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """Verify, evaluate, gate (and publish); the result JSON (without `ok`)."""
    uri = inputs.artifact_uri(spec.artifact.uri, "spec.artifact.uri")
    inputs.name(namespace, "metadata.namespace", label=True)
    try:
        artifact = store_mod.read_uri(uri, store)
    except store_mod.ArtifactNotFound as exc:
        raise WorkloadError(f"artifact {uri} not found", reason="ArtifactUnavailable") from exc
    model = safeload.load_model(artifact, expected_sha256=spec.artifact.sha256, where=f"artifact {uri}")

    lineage = spec.lineage or api.Lineage()
    if not lineage.dataset_uri:
        raise InvalidSpec(
            "spec.lineage.datasetUri is required: validation evaluates on that snapshot's holdout"
        )
    inputs.artifact_uri(lineage.dataset_uri, "spec.lineage.datasetUri")
    try:
        data = store_mod.read_uri(lineage.dataset_uri, store)
    except store_mod.ArtifactNotFound as exc:
        raise WorkloadError(
            f"dataset snapshot {lineage.dataset_uri} not found", reason="DatasetUnavailable"
        ) from exc
    snap = snap_mod.from_parquet(
        data, lineage.dataset_sha256, where=f"dataset snapshot {lineage.dataset_uri}"
    )
    expected = [str(c) for c in getattr(model, "feature_names_in_", snap.feature_names)]
    missing = [c for c in expected if c not in snap.frame.columns]
    if missing:
        raise WorkloadError(
            f"the model expects features {missing[:5]} that the snapshot does not have",
            reason="FeatureMismatch",
        )
    X = snap.frame[expected]
    _, X_test, _, y_test = metrics_mod.holdout_split(X, snap.y(), snap.task, lineage.split or Split())

    try:
        holdout = metrics_mod.evaluate(model, X_test, y_test, snap.task)
        latency = metrics_mod.measure_latency(model, X_test)
    except WorkloadError:
        raise
    except Exception as exc:
        raise WorkloadError(
            f"the model failed on the holdout rows: {type(exc).__name__}: {exc}", reason="EvaluationFailed"
        ) from exc
    split = lineage.split or Split()
    holdout_info: dict[str, Any] = {
        "datasetSha256": snap.sha256,
        "rows": len(y_test),
        "testFraction": split.test_fraction,
        "seed": split.seed,
    }
    if lineage.dataset:
        holdout_info["dataset"] = lineage.dataset
    if champion is not None and production is not None:
        # Champion and challenger on the same rows: this version's holdout, which for a version
        # trained on recent traffic is the distribution that matters now.
        champion_uri = inputs.artifact_uri(champion[0], "--production-artifact-uri")
        try:
            champion_model = safeload.load_model(
                store_mod.read_uri(champion_uri, store),
                expected_sha256=champion[1],
                where=f"production artifact {champion_uri}",
            )
            champion_metrics = metrics_mod.evaluate(champion_model, X_test, y_test, snap.task)
        except WorkloadError:
            raise
        except Exception as exc:
            raise WorkloadError(
                f"the production model failed on this version's holdout rows: {type(exc).__name__}: {exc}",
                reason="EvaluationFailed",
            ) from exc
        production = (production[0], champion_metrics)
        holdout_info["productionEvaluated"] = True
    passed, reasons, comparison = apply_gates(holdout, spec.gates, production)
    log.info("validated=%s metrics=%s reasons=%s", passed, holdout, reasons)
    result: dict[str, Any] = {
        "validated": passed,
        "reasons": reasons,
        "metrics": holdout,
        "latency": latency,
        "holdout": holdout_info,
    }
    if comparison is not None:
        result["production"] = comparison
    if passed and publish:
        result["publishedUri"] = _publish(store, spec, namespace, artifact)
    return result
