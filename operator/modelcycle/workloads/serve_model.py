"""The served model: load one version (sha256 checked, safe skops load) and predict on batches.

A model directory holds the skops file and `metadata.json` (features with their dtypes, target,
task, classes). Prediction takes either a float matrix (every feature numeric) or a DataFrame
(some feature categorical with string values), in the metadata's feature order.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from modelcycle.errors import UserError

MODEL_SUFFIX = ".skops"

# Final estimators whose predict() is the argmax of predict_proba(): for these one predict_proba
# call gives both outputs. Anything else gets its own predict() call (e.g. SVC's Platt scaling can
# disagree with its decision function).
_PROBA_CONSISTENT = frozenset(
    {
        "LogisticRegression",
        "LogisticRegressionCV",
        "RandomForestClassifier",
        "ExtraTreesClassifier",
        "DecisionTreeClassifier",
        "ExtraTreeClassifier",
        "GradientBoostingClassifier",
        "HistGradientBoostingClassifier",
        "KNeighborsClassifier",
        "GaussianNB",
        "MultinomialNB",
        "BernoulliNB",
        "ComplementNB",
        "CategoricalNB",
        "MLPClassifier",
    }
)


@dataclass(frozen=True)
class Feature:
    """One input feature of the model."""

    name: str
    kind: Literal["numeric", "categorical"]
    dtype: str
    """numpy dtype name the model was trained on (`object` for strings)."""

    @property
    def is_string(self) -> bool:
        return self.dtype in ("object", "str", "string", "category") or self.dtype.startswith(("<U", "str"))


@dataclass
class ServedModel:
    """A loaded model version and what the protocol needs to know about it."""

    name: str
    version: str
    estimator: Any
    features: list[Feature]
    task: Literal["classification", "regression"]
    classes: NDArray[Any] | None
    target: str | None = None
    sha256: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        final = self.estimator
        steps = getattr(final, "steps", None)
        if steps:
            final = steps[-1][1]
        self.has_proba = self.task == "classification" and hasattr(self.estimator, "predict_proba")
        self.proba_gives_predict = self.has_proba and type(final).__name__ in _PROBA_CONSISTENT
        self.feature_names = [f.name for f in self.features]
        self.all_numeric = not any(f.is_string for f in self.features)
        self.needs_frame = not self.all_numeric or _selects_columns_by_name(self.estimator)
        if self.classes is None and self.task == "classification":
            found = getattr(self.estimator, "classes_", None)
            self.classes = None if found is None else np.asarray(found)
        self.predict_datatype = _datatype_of(self.classes) if self.classes is not None else "FP64"
        self.fast_forest = FastForest.build(self.estimator, self.n_features) if not self.needs_frame else None
        # A model fitted on a DataFrame warns on every call with a matrix in the same column order
        # (what the server passes when no column is selected by name). Silenced once, for the
        # process, rather than with a catch_warnings() per predict call.
        warnings.filterwarnings("ignore", message="X does not have valid feature names", category=UserWarning)

    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def n_classes(self) -> int:
        return 0 if self.classes is None else len(self.classes)

    def frame(self, x: NDArray[Any]) -> Any:
        """Rows as a DataFrame with the training dtypes (for pipelines that select columns by name)."""
        import pandas as pd

        data: dict[str, Any] = {}
        for i, feature in enumerate(self.features):
            column = x[:, i]
            if feature.is_string:
                data[feature.name] = column.astype(object)
                continue
            values = np.asarray(column, dtype=np.float64)
            if feature.dtype == "int64" and np.isfinite(values).all() and (values == np.round(values)).all():
                data[feature.name] = values.astype(np.int64)
            elif feature.dtype == "bool" and np.isin(values, (0.0, 1.0)).all():
                data[feature.name] = values.astype(bool)
            else:
                data[feature.name] = values
        return pd.DataFrame(data, columns=self.feature_names)

    def predict(self, x: Any, *, proba: bool) -> tuple[NDArray[Any], NDArray[np.float64] | None]:
        """Predictions (and class probabilities when asked and available) for `[N, F]` rows."""
        if self.fast_forest is not None and isinstance(x, np.ndarray) and x.dtype.kind == "f":
            fast = self.fast_forest.predict(x)
            if fast is not None:
                return fast[0], (fast[1] if proba else None)
        if self.needs_frame and isinstance(x, np.ndarray):
            x = self.frame(x)
        if proba and self.has_proba:
            probabilities = np.asarray(self.estimator.predict_proba(x), dtype=np.float64)
            if self.proba_gives_predict and self.classes is not None:
                return self.classes[probabilities.argmax(axis=1)], probabilities
            return np.asarray(self.estimator.predict(x)), probabilities
        return np.asarray(self.estimator.predict(x)), None


class FastForest:
    """A fitted random forest / extra-trees model evaluated tree by tree, without sklearn's wrapper.

    sklearn's forests call each tree through joblib and a per-call config/warnings wrapper, which on
    small batches costs about 20 times the tree traversal itself (about 2 ms for 50 trees, whatever
    the batch). This runs the same arithmetic in the same order as sklearn's sequential path -
    `tree_.predict` on float32 rows, summed in estimator order, divided by the number of trees,
    `classes_.take(argmax)` - and is enabled only after it reproduced sklearn's output bit for bit
    on probe rows at load time. Rows with NaN or infinity, or of the wrong width, take sklearn's
    own path (and get its errors). Only plain forests (optionally at the end of a Pipeline whose
    earlier steps are applied with their own `transform`).
    """

    KINDS = frozenset(
        {"RandomForestClassifier", "ExtraTreesClassifier", "RandomForestRegressor", "ExtraTreesRegressor"}
    )

    def __init__(self, estimator: Any, forest: Any, prefix: Any) -> None:
        self.estimator = estimator
        self.prefix = prefix
        self.trees = [e.tree_ for e in forest.estimators_]
        self.classifier = hasattr(forest, "classes_")
        self.classes = np.asarray(forest.classes_) if self.classifier else None
        self.n_classes = int(forest.n_classes_) if self.classifier else 0
        self.n_features = int(forest.n_features_in_)

    @classmethod
    def build(cls, estimator: Any, n_features: int) -> FastForest | None:
        forest, prefix = estimator, None
        steps = getattr(estimator, "steps", None)
        if isinstance(steps, list) and steps:
            forest = steps[-1][1]
            prefix = estimator[:-1] if len(steps) > 1 else None
        if type(forest).__name__ not in cls.KINDS or type(forest).__module__.split(".")[0] != "sklearn":
            return None
        if getattr(forest, "n_outputs_", 1) != 1 or not getattr(forest, "estimators_", None):
            return None
        try:
            fast = cls(estimator, forest, prefix)
            probe = fast.probe_rows(n_features)
            if fast.predict(probe) is None or not fast.matches_sklearn(probe):
                return None
        except Exception:  # anything unexpected: keep sklearn's own path
            return None
        return fast

    def probe_rows(self, n_features: int, rows: int = 256) -> NDArray[np.float64]:
        """Rows around the trees' own split thresholds, so that both sides of many splits are taken."""
        rng = np.random.default_rng(0)
        out = rng.normal(size=(rows, n_features))
        if self.prefix is None:
            for f in range(min(n_features, self.n_features)):
                thresholds = np.concatenate([t.threshold[t.feature == f] for t in self.trees[:10]])
                if thresholds.size:
                    picks = rng.choice(thresholds, rows)
                    out[:, f] = picks + rng.choice([-1.0, 1.0], rows) * 1e-3 * (np.abs(picks) + 1.0)
        return out

    def matches_sklearn(self, rows: NDArray[np.float64]) -> bool:
        fast = self.predict(rows)
        if fast is None:
            return False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self.classifier:
                reference = np.asarray(self.estimator.predict_proba(rows))
                labels = np.asarray(self.estimator.predict(rows))
                probabilities = fast[1]
                if probabilities is None:
                    return False
                return bool(np.array_equal(probabilities, reference) and np.array_equal(fast[0], labels))
            return bool(np.array_equal(fast[0], np.asarray(self.estimator.predict(rows))))

    def predict(self, x: NDArray[Any]) -> tuple[NDArray[Any], NDArray[np.float64] | None] | None:
        """(predictions, class probabilities or None), or None when sklearn's path must answer."""
        if x.ndim != 2 or not np.isfinite(x).all():
            return None
        if self.prefix is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                x = np.asarray(self.prefix.transform(x))
        if x.ndim != 2 or x.shape[1] != self.n_features:
            return None
        rows = np.ascontiguousarray(x, dtype=np.float32)
        if self.classifier:
            proba = np.zeros((len(rows), self.n_classes), dtype=np.float64)
            for tree in self.trees:
                proba += tree.predict(rows)[:, : self.n_classes]
            proba /= len(self.trees)
            assert self.classes is not None
            return self.classes.take(np.argmax(proba, axis=1), axis=0), proba
        total = np.zeros(len(rows), dtype=np.float64)
        for tree in self.trees:
            total += tree.predict(rows)[:, 0]
        total /= len(self.trees)
        return total, None


def _selects_columns_by_name(estimator: Any) -> bool:
    """Whether a (nested) ColumnTransformer picks columns by name, so the model needs a DataFrame."""
    stack = [estimator]
    while stack:
        item = stack.pop()
        steps = getattr(item, "steps", None)
        if isinstance(steps, list):
            stack.extend(step for _, step in steps)
        transformers = getattr(item, "transformers", None)
        if type(item).__name__ == "ColumnTransformer" and isinstance(transformers, list):
            for entry in transformers:
                columns = entry[2] if len(entry) > 2 else None
                if isinstance(columns, str) or (
                    isinstance(columns, list | tuple) and any(isinstance(c, str) for c in columns)
                ):
                    return True
                stack.append(entry[1])
    return False


def _datatype_of(values: NDArray[Any]) -> str:
    kind = values.dtype.kind
    if kind == "b":
        return "BOOL"
    if kind in "iu":
        return "INT64"
    if kind == "f":
        return "FP64"
    return "BYTES"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _features_from_metadata(metadata: Mapping[str, Any]) -> list[Feature]:
    raw = metadata.get("features")
    if not isinstance(raw, list) or not raw:
        raise UserError("metadata.json has no `features` list")
    raw_dtypes, raw_kinds = metadata.get("dtypes"), metadata.get("kinds")
    dtypes: Mapping[str, Any] = raw_dtypes if isinstance(raw_dtypes, Mapping) else {}
    kinds: Mapping[str, Any] = raw_kinds if isinstance(raw_kinds, Mapping) else {}
    out: list[Feature] = []
    for item in raw:
        if isinstance(item, str):
            name, dtype, kind = item, str(dtypes.get(item, "float64")), kinds.get(item)
        elif isinstance(item, Mapping) and "name" in item:
            name = str(item["name"])
            dtype = str(item.get("dtype") or dtypes.get(name) or "float64")
            kind = item.get("kind") or kinds.get(name)
        else:
            raise UserError(f"metadata.json: bad feature entry {item!r}")
        if kind not in ("numeric", "categorical"):
            is_string = dtype in ("object", "str", "string", "category", "bool")
            kind = "categorical" if is_string else "numeric"
        out.append(Feature(name, "categorical" if kind == "categorical" else "numeric", dtype))
    return out


def find_model_file(model_dir: Path, metadata: Mapping[str, Any]) -> Path:
    for key in ("modelFile", "artifact", "file"):
        value = metadata.get(key)
        if isinstance(value, str) and value and "/" not in value:
            path = model_dir / value
            if path.is_file():
                return path
    candidates = sorted(model_dir.glob(f"*{MODEL_SUFFIX}"))
    if len(candidates) != 1:
        raise UserError(
            f"{model_dir}: expected exactly one {MODEL_SUFFIX} file beside metadata.json, "
            f"found {len(candidates)}"
        )
    return candidates[0]


def read_metadata(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "metadata.json"
    try:
        metadata = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise UserError(f"{model_dir}: no metadata.json beside the model") from exc
    except ValueError as exc:
        raise UserError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(metadata, dict):
        raise UserError(f"{path}: expected a JSON object")
    return metadata


def load_estimator(path: Path, expected_sha256: str | None) -> tuple[Any, str]:
    """Safe-load the skops file after checking its sha256 (computed and trusted when not given)."""
    from modelcycle.workloads import safeload

    actual = sha256_file(path)
    if expected_sha256 and actual != expected_sha256.lower():
        raise UserError(f"{path}: sha256 is {actual}, expected {expected_sha256}")
    try:
        return safeload.load_model(path, expected_sha256=actual), actual
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"{path}: cannot load the model safely: {exc}") from exc


def load_model_dir(
    model_dir: Path, *, name: str, version: str, expected_sha256: str | None = None
) -> ServedModel:
    """Load a model directory (skops file + metadata.json)."""
    if not model_dir.is_dir():
        raise UserError(f"model directory {model_dir} does not exist")
    metadata = read_metadata(model_dir)
    model_file = find_model_file(model_dir, metadata)
    if expected_sha256 is None:
        recorded = metadata.get("sha256")
        expected_sha256 = recorded if isinstance(recorded, str) and recorded else None
    estimator, digest = load_estimator(model_file, expected_sha256)
    task: Literal["classification", "regression"]
    if metadata.get("task") in ("classification", "regression"):
        task = metadata["task"]
    else:
        task = "classification" if hasattr(estimator, "classes_") else "regression"
    classes = metadata.get("classes")
    class_array = np.asarray(classes) if isinstance(classes, list) and classes else None
    fitted = getattr(estimator, "classes_", None)
    if class_array is not None and fitted is not None and len(fitted) == len(class_array):
        # The estimator's own labels decide the dtype (e.g. int64, not JSON's int).
        class_array = np.asarray(fitted)
    target = metadata.get("target")
    return ServedModel(
        name=name,
        version=version,
        estimator=estimator,
        features=_features_from_metadata(metadata),
        task=task,
        classes=class_array,
        target=target if isinstance(target, str) else None,
        sha256=digest,
        metadata=metadata,
    )
