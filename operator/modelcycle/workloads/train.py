"""`modelcycle train`: fit the estimator of a TrainingRun on a verified Dataset snapshot.

    modelcycle train --spec FILE|- | --spec-json JSON --dataset-uri URI --dataset-sha256 HEX
                     [--profile-uri URI] [--store STORE] [--namespace NS] [--name RUN]
                     [--termination-log PATH]

Writes `models/<namespace>/<model>/runs/<run>/model.skops` and then (last, marking completion)
`metadata.json` beside it. The operator assigns the version number when it registers the
ModelVersion; `modelcycle validate --publish` copies a Validated artifact to `v<N>/`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import platform
import re
import warnings
from importlib import metadata as importlib_metadata
from typing import Any

import pandas as pd

from modelcycle.api import trainingrun as api
from modelcycle.api.common import Split
from modelcycle.workloads import inputs, safeload, specfile
from modelcycle.workloads import metrics as metrics_mod
from modelcycle.workloads import snapshot as snap_mod
from modelcycle.workloads import store as store_mod
from modelcycle.workloads.results import (
    InvalidSpec,
    WorkloadError,
    add_common_arguments,
    json_safe,
    run_workload,
)

log = logging.getLogger("modelcycle.workloads.train")

DEFAULT_ESTIMATOR_PREFIXES: tuple[str, ...] = ("sklearn.",)
ENV_ESTIMATOR_PREFIXES = "MODELCYCLE_ESTIMATOR_PREFIXES"
MODEL_FILE = "model.skops"
METADATA_FILE = "metadata.json"
METADATA_VERSION = 1

# preprocessing type -> (module, class, which features by default)
TRANSFORMERS: dict[str, tuple[str, str, str]] = {
    "standardScaler": ("sklearn.preprocessing", "StandardScaler", "numeric"),
    "minMaxScaler": ("sklearn.preprocessing", "MinMaxScaler", "numeric"),
    "robustScaler": ("sklearn.preprocessing", "RobustScaler", "numeric"),
    "simpleImputer": ("sklearn.impute", "SimpleImputer", "numeric"),
    "oneHotEncoder": ("sklearn.preprocessing", "OneHotEncoder", "categorical"),
}


class UnknownEstimator(WorkloadError):
    reason = "UnknownEstimator"


class InvalidParams(WorkloadError):
    reason = "InvalidParams"


def configure(parser: argparse.ArgumentParser) -> None:
    specfile.add_spec_arguments(parser, "TrainingRun")
    parser.add_argument("--dataset-uri", required=True, metavar="URI", help="the snapshot's data.parquet URI")
    parser.add_argument(
        "--dataset-sha256", required=True, metavar="HEX", help="the snapshot's content sha256 (verified)"
    )
    parser.add_argument(
        "--profile-uri", metavar="URI", help="the snapshot's profile (default: profile.json beside the data)"
    )
    store_mod.add_store_argument(parser)
    parser.add_argument(
        "--namespace", metavar="NS", help="namespace of the run (default: metadata.namespace)"
    )
    parser.add_argument("--name", metavar="RUN", help="name of the run (default: metadata.name)")
    add_common_arguments(parser)


def run(args: argparse.Namespace) -> int:
    def body() -> dict[str, Any]:
        spec, meta = specfile.load(args, "TrainingRun", api.TrainingRunSpec)
        namespace = args.namespace or meta.get("namespace") or "default"
        name = args.name or meta.get("name")
        if not name:
            raise InvalidSpec("the run has no name: pass --name or set metadata.name")
        store = store_mod.open_store(args.store)
        return train(
            spec,
            store,
            namespace=namespace,
            run_name=name,
            dataset_uri=args.dataset_uri,
            dataset_sha256=args.dataset_sha256,
            profile_uri=args.profile_uri,
        )

    return run_workload(args, body)


# --- estimator ----------------------------------------------------------------------------------


def estimator_prefixes() -> tuple[str, ...]:
    """`sklearn.` plus the comma-separated prefixes of env MODELCYCLE_ESTIMATOR_PREFIXES."""
    extra = [p.strip() for p in os.environ.get(ENV_ESTIMATOR_PREFIXES, "").split(",") if p.strip()]
    return (*DEFAULT_ESTIMATOR_PREFIXES, *(p if p.endswith(".") else p + "." for p in extra))


def check_estimator_path(path: str) -> None:
    """Refuse a class path outside the allowlist. Runs BEFORE anything is imported."""
    prefixes = estimator_prefixes()
    if not path.startswith(prefixes):
        raise UnknownEstimator(
            f"estimator class {path!r} is not allowed: only classes under {', '.join(prefixes)} "
            f"are accepted (an administrator can extend the list with {ENV_ESTIMATOR_PREFIXES})"
        )
    parts = path.split(".")
    if len(parts) < 2 or any(not p.isidentifier() or p.startswith("_") for p in parts):
        raise UnknownEstimator(
            f"estimator class {path!r} is not a public import path such as sklearn.linear_model.Ridge"
        )


def resolve_estimator(path: str) -> type:
    """The estimator class at an allowlisted import path."""
    check_estimator_path(path)
    from sklearn.base import BaseEstimator

    module_name, _, attr = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UnknownEstimator(f"estimator class {path!r}: no module {module_name!r}") from exc
    cls = getattr(module, attr, None)
    if cls is None:
        raise UnknownEstimator(f"estimator class {path!r}: {module_name} has no {attr!r}")
    if not (isinstance(cls, type) and issubclass(cls, BaseEstimator) and hasattr(cls, "fit")):
        raise UnknownEstimator(f"{path!r} is not a scikit-learn estimator class")
    return cls


def make_estimator(spec: api.Estimator, task: str, seed: int) -> Any:
    from sklearn.base import is_classifier, is_regressor

    cls = resolve_estimator(spec.class_)
    params = dict(spec.params or {})
    try:
        estimator = cls(**params)
    except TypeError as exc:
        raise InvalidParams(f"{spec.class_}: {exc}") from exc
    if task == "classification" and not is_classifier(estimator):
        raise WorkloadError(
            f"{spec.class_} is not a classifier but the dataset's task is classification",
            reason="TaskMismatch",
        )
    if task == "regression" and not is_regressor(estimator):
        raise WorkloadError(
            f"{spec.class_} is not a regressor but the dataset's task is regression", reason="TaskMismatch"
        )
    if "random_state" in estimator.get_params(deep=False) and "random_state" not in params:
        estimator.set_params(random_state=seed)
    return estimator


# --- pipeline -----------------------------------------------------------------------------------


def _transformer(step: api.PreprocessingStep) -> Any:
    module_name, class_name, _ = TRANSFORMERS[step.type]
    cls = getattr(importlib.import_module(module_name), class_name)
    params = dict(step.params or {})
    if step.type == "oneHotEncoder":
        params.setdefault("handle_unknown", "ignore")
        params["sparse_output"] = False  # steps hand pandas frames to each other
    try:
        return cls(**params)
    except TypeError as exc:
        raise InvalidParams(f"preprocessing step {step.type}: {exc}") from exc


def _default_columns(step: api.PreprocessingStep, snap: snap_mod.Snapshot) -> list[str]:
    which = TRANSFORMERS[step.type][2]
    if step.type == "simpleImputer" and (step.params or {}).get("strategy") in ("most_frequent", "constant"):
        return snap.feature_names
    return [c.name for c in snap.features if c.kind == which and (which != "numeric" or c.type != "string")]


def build_pipeline(spec: api.TrainingRunSpec, snap: snap_mod.Snapshot, seed: int) -> Any:
    """Pipeline([(step<i>_<type>, ColumnTransformer), ..., ("estimator", estimator)])."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    estimator = make_estimator(spec.estimator, snap.task, seed)
    steps: list[tuple[str, Any]] = []
    encoded: set[str] = set()
    features = set(snap.feature_names)
    for i, step in enumerate(spec.preprocessing or []):
        columns = list(step.columns) if step.columns is not None else _default_columns(step, snap)
        unknown = [c for c in columns if c not in features]
        if unknown:
            raise InvalidParams(f"preprocessing step {i} ({step.type}): unknown columns {unknown}")
        if not columns:
            log.info("preprocessing step %d (%s) has no columns to apply to; skipped", i, step.type)
            continue
        if step.type == "oneHotEncoder":
            encoded.update(columns)
        transformer = ColumnTransformer(
            [(step.type, _transformer(step), columns)],
            remainder="passthrough",
            verbose_feature_names_out=False,
        )
        steps.append((f"step{i}_{step.type}", transformer))
    text = [c.name for c in snap.features if c.type == "string" and c.name not in encoded]
    if text:
        raise InvalidParams(
            f"features {text} hold text: add a preprocessing step {{type: oneHotEncoder}} that covers them"
        )
    pipeline = Pipeline([*steps, ("estimator", estimator)])
    if steps:
        pipeline.set_output(transform="pandas")
    return pipeline


def cv_splitter(task: str, folds: int, seed: int) -> Any:
    """StratifiedKFold (classification) or KFold, shuffled with the split seed."""
    from sklearn.model_selection import KFold, StratifiedKFold

    cls = StratifiedKFold if task == "classification" else KFold
    return cls(n_splits=folds, shuffle=True, random_state=seed)


def default_scoring(task: str) -> str:
    return "accuracy" if task == "classification" else "neg_root_mean_squared_error"


def build_search(pipeline: Any, search: api.HyperparameterSearch, task: str, seed: int) -> Any:
    from sklearn.metrics import get_scorer
    from sklearn.model_selection import GridSearchCV, RandomizedSearchCV

    available = pipeline.get_params()
    grid: dict[str, list[Any]] = {}
    for key, values in search.params.items():
        full = key if "__" in key else f"estimator__{key}"
        if full not in available:
            raise InvalidParams(f"search parameter {key!r} is not a parameter of the estimator")
        if not values:
            raise InvalidParams(f"search parameter {key!r} has no candidate values")
        grid[full] = list(values)
    scoring = search.scoring or default_scoring(task)
    try:
        get_scorer(scoring)
    except ValueError as exc:
        raise InvalidParams(f"unknown scoring {scoring!r}") from exc
    cv = cv_splitter(task, search.folds, seed)
    if search.type == "grid":
        return GridSearchCV(pipeline, grid, scoring=scoring, cv=cv, n_jobs=1, refit=True, error_score="raise")
    combos = 1
    for values in grid.values():
        combos *= len(values)
    return RandomizedSearchCV(
        pipeline,
        grid,
        n_iter=min(search.max_trials, combos),
        scoring=scoring,
        cv=cv,
        n_jobs=1,
        refit=True,
        random_state=seed,
        error_score="raise",
    )


def _fit(model: Any, X: pd.DataFrame, y: pd.Series) -> None:
    from sklearn.utils._param_validation import InvalidParameterError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            model.fit(X, y)
    except InvalidParameterError as exc:
        raise InvalidParams(str(exc).splitlines()[0]) from exc
    except (ValueError, TypeError) as exc:
        raise WorkloadError(
            f"training failed: {str(exc).splitlines()[0] if str(exc) else exc}", reason="TrainingFailed"
        ) from exc


def _strip(params: dict[str, Any]) -> dict[str, Any]:
    return {k.removeprefix("estimator__"): v for k, v in params.items()}


# --- artifacts ----------------------------------------------------------------------------------


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("scikit-learn", "skops", "numpy", "scipy", "pandas", "pyarrow", "modelcycle"):
        try:
            out[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            out[dist] = "unknown"
    return out


def run_key(namespace: str, model: str, run_name: str, filename: str) -> str:
    inputs.name(namespace, "metadata.namespace", label=True)
    inputs.name(model, "spec.model.name", label=True)
    inputs.name(run_name, "metadata.name")
    return f"models/{namespace}/{model}/runs/{run_name}/{filename}"


def version_key(namespace: str, model: str, version: int, filename: str) -> str:
    inputs.name(namespace, "metadata.namespace", label=True)
    inputs.name(model, "spec.model", label=True)
    return f"models/{namespace}/{model}/v{int(version)}/{filename}"


def load_snapshot(uri: str, sha256: str, store: store_mod.ArtifactStore) -> snap_mod.Snapshot:
    if not re.fullmatch(r"[a-f0-9]{64}", sha256):
        raise InvalidSpec(f"--dataset-sha256 {sha256!r} is not 64 lowercase hex characters")
    try:
        data = store_mod.read_uri(uri, store)
    except store_mod.ArtifactNotFound as exc:
        raise WorkloadError(f"dataset snapshot {uri} not found", reason="DatasetUnavailable") from exc
    return snap_mod.from_parquet(data, sha256, where=f"dataset snapshot {uri}")


def _read_profile(
    uri: str | None, dataset_uri: str, store: store_mod.ArtifactStore
) -> tuple[str, str] | None:
    explicit = uri is not None
    if uri is None:
        if not dataset_uri.endswith("/data.parquet"):
            return None
        uri = store_mod.sibling_uri(dataset_uri, "profile.json")
    try:
        return uri, store_mod.sha256_bytes(store_mod.read_uri(uri, store))
    except WorkloadError as exc:
        if explicit:
            raise WorkloadError(f"profile {uri}: {exc.message}", reason="ProfileUnavailable") from exc
        return None


def train(
    spec: api.TrainingRunSpec,
    store: store_mod.ArtifactStore,
    *,
    namespace: str,
    run_name: str,
    dataset_uri: str,
    dataset_sha256: str,
    profile_uri: str | None = None,
) -> dict[str, Any]:
    """Train, evaluate, save; the result JSON (without `ok`)."""
    check_estimator_path(spec.estimator.class_)  # refuse early, before reading anything
    model_key = run_key(namespace, spec.model.name, run_name, MODEL_FILE)
    metadata_key = run_key(namespace, spec.model.name, run_name, METADATA_FILE)
    split = spec.split or Split()

    snap = load_snapshot(dataset_uri, dataset_sha256, store)
    profile = _read_profile(profile_uri, dataset_uri, store)
    pipeline = build_pipeline(spec, snap, split.seed)
    X_train, X_test, y_train, y_test = metrics_mod.holdout_split(snap.X(), snap.y(), snap.task, split)

    model: Any = pipeline
    search_info: dict[str, Any] | None = None
    best_params: dict[str, Any] | None = None
    if spec.search is not None:
        search = build_search(pipeline, spec.search, snap.task, split.seed)
        _fit(search, X_train, y_train)
        model = search.best_estimator_
        best_params = json_safe(_strip(search.best_params_))
        search_info = {
            "type": spec.search.type,
            "scoring": search.scoring,
            "folds": spec.search.folds,
            "trials": len(search.cv_results_["params"]),
            "bestScore": float(search.best_score_),
        }
        log.info("search: best %s = %.6g with %s", search.scoring, search.best_score_, best_params)
    else:
        _fit(pipeline, X_train, y_train)

    holdout = metrics_mod.evaluate(model, X_test, y_test, snap.task)
    log.info("holdout metrics: %s", holdout)
    estimator = model.steps[-1][1]
    params = json_safe(estimator.get_params(deep=False))

    import skops.io as sio

    artifact = sio.dumps(model)
    safeload.check_format(artifact, "the trained model")
    safeload.check_types(artifact, "the trained model")  # refuse to store what validation would refuse
    artifact_sha = store_mod.sha256_bytes(artifact)
    classes = json_safe(list(getattr(model, "classes_", []))) if snap.task == "classification" else None
    metadata = {
        "version": METADATA_VERSION,
        "format": "skops",
        "file": MODEL_FILE,
        "sha256": artifact_sha,
        "namespace": namespace,
        "model": spec.model.name,
        "run": run_name,
        "task": snap.task,
        "target": snap.target,
        "features": [{"name": c.name, "dtype": c.type, "kind": c.kind} for c in snap.features],
        "classes": classes,
        "estimator": {"class": spec.estimator.class_, "params": json_safe(spec.estimator.params or {})},
        "preprocessing": [s.to_json_dict() for s in spec.preprocessing or []],
        "split": split.to_json_dict(),
        "search": search_info,
        "metrics": holdout,
        "params": params,
        "bestParams": best_params,
        "rows": {"train": len(X_train), "test": len(X_test)},
        "dataset": {"uri": dataset_uri, "sha256": snap.sha256},
        "profile": {"uri": profile[0], "sha256": profile[1]} if profile else None,
        "libraries": library_versions(),
    }
    metadata_bytes = json.dumps(json_safe(metadata), indent=2, allow_nan=False).encode("utf-8")
    store.delete(metadata_key)  # a retried run: mark the directory incomplete while it is rewritten
    artifact_uri = store.put_bytes(model_key, artifact)
    try:
        metadata_uri = store.put_bytes(metadata_key, metadata_bytes)  # last: marks the run complete
    except BaseException:
        store.delete(model_key)
        raise
    result: dict[str, Any] = {
        "artifact": {"uri": artifact_uri, "sha256": artifact_sha, "format": "skops"},
        "metadataUri": metadata_uri,
        "metrics": holdout,
        "params": params,
        "bestParams": best_params,
        "datasetSha256": snap.sha256,
        "task": snap.task,
        "split": split.to_json_dict(),
    }
    if profile:
        result["profileUri"], result["profileSha256"] = profile
    return result
