"""Small real models for the serving tests: fit with scikit-learn, dump with skops, describe in metadata.json.

The layout is what training writes (a model directory: `model.skops` + `metadata.json`), and the
training-data profile comes from `modelcycle.workloads.profile`, so the server is tested against
the real artifact formats without running the train workload.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import skops.io as sio
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from modelcycle.workloads import profile as profiling


@dataclass(frozen=True)
class ModelDir:
    path: Path
    model_file: Path
    sha256: str
    features: list[str]
    classes: list[Any] | None
    x: np.ndarray
    """The training rows (float64, feature order)."""
    y: np.ndarray
    estimator: Any
    profile_path: Path

    @property
    def n_features(self) -> int:
        return len(self.features)

    def _rows(self, rows: np.ndarray) -> Any:
        if getattr(self.estimator, "feature_names_in_", None) is not None:
            return pd.DataFrame(np.asarray(rows, dtype=np.float64), columns=self.features)
        return np.asarray(rows, dtype=np.float64)

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """The estimator's own predictions, in process (the reference for the server's)."""
        return np.asarray(self.estimator.predict(self._rows(rows)))

    def predict_proba(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.estimator.predict_proba(self._rows(rows)))


def json_profile(model: ModelDir) -> dict[str, Any]:
    return dict(json.loads(model.profile_path.read_text()))


def _write(
    directory: Path,
    estimator: Any,
    frame: pd.DataFrame,
    features: list[str],
    target: str,
    task: str,
    classes: list[Any] | None,
    record_profile: bool = False,
) -> ModelDir:
    directory.mkdir(parents=True, exist_ok=True)
    model_file = directory / "model.skops"
    sio.dump(estimator, model_file)
    digest = hashlib.sha256(model_file.read_bytes()).hexdigest()
    metadata: dict[str, Any] = {
        "features": [{"name": f, "dtype": str(frame[f].dtype)} for f in features],
        "target": target,
        "task": task,
        "sha256": digest,
    }
    if classes is not None:
        metadata["classes"] = classes
    doc = profiling.build_profile(
        frame,
        features=[(f, "numeric", str(frame[f].dtype)) for f in features],
        target=target,
        task=task,
        classes=classes,
    )
    profile_path = directory / "profile.json"
    profile_path.write_bytes(profiling.dumps(doc))
    if record_profile:  # as training does: the profile's URI and sha256
        digest = hashlib.sha256(profile_path.read_bytes()).hexdigest()
        metadata["profile"] = {"uri": profile_path.as_uri(), "sha256": digest}
    (directory / "metadata.json").write_text(json.dumps(metadata))
    return ModelDir(
        path=directory,
        model_file=model_file,
        sha256=digest,
        features=features,
        classes=classes,
        x=frame[features].to_numpy(dtype=np.float64),
        y=frame[target].to_numpy(),
        estimator=estimator,
        profile_path=profile_path,
    )


def iris_classifier(directory: Path, *, record_profile: bool = False) -> ModelDir:
    """Scaled logistic regression on iris (4 features, classes 0, 1, 2), fitted on a DataFrame."""
    data = load_iris(as_frame=True)
    frame = data.frame
    features = list(data.feature_names)
    estimator = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    estimator.fit(frame[features], frame["target"])
    return _write(
        directory, estimator, frame, features, "target", "classification", [0, 1, 2], record_profile
    )


def diabetes_regressor(directory: Path) -> ModelDir:
    """Linear regression on diabetes (10 features)."""
    data = load_diabetes(as_frame=True)
    frame = data.frame
    features = list(data.feature_names)
    estimator = LinearRegression().fit(frame[features], frame["target"])
    return _write(directory, estimator, frame, features, "target", "regression", None)


def breast_cancer_model(directory: Path, kind: str = "lr") -> ModelDir:
    """The benchmark models: scaled logistic regression (`lr`) or a 50-tree random forest (`rf`)."""
    data = load_breast_cancer(as_frame=True)
    frame = data.frame
    features = list(data.feature_names)
    if kind == "lr":
        estimator: Any = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    else:
        estimator = RandomForestClassifier(n_estimators=50, random_state=0)
    estimator.fit(frame[features].to_numpy(), frame["target"].to_numpy())
    return _write(directory, estimator, frame, features, "target", "classification", [0, 1])
