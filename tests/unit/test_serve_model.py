"""Loading a served model, and the forest fast path that must equal sklearn bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier, RandomForestRegressor
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from modelcycle.errors import UserError
from modelcycle.workloads import serve_model
from support import models


@pytest.mark.parametrize(
    "make",
    [
        lambda: RandomForestClassifier(n_estimators=25, random_state=0),
        lambda: ExtraTreesClassifier(n_estimators=10, max_depth=4, random_state=1),
        lambda: make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=5, random_state=2)),
        lambda: Pipeline([("estimator", RandomForestClassifier(n_estimators=7, random_state=3))]),
    ],
)
def test_fast_forest_equals_sklearn_classifiers(make) -> None:  # type: ignore[no-untyped-def]
    for data in (load_breast_cancer(), load_iris()):
        estimator = make().fit(data.data, data.target)
        fast = serve_model.FastForest.build(estimator, data.data.shape[1])
        assert fast is not None
        rng = np.random.default_rng(0)
        rows = np.concatenate([data.data, data.data + rng.normal(0, 0.5, data.data.shape)])
        result = fast.predict(rows)
        assert result is not None
        assert np.array_equal(result[1], estimator.predict_proba(rows))
        assert np.array_equal(result[0], estimator.predict(rows))


def test_fast_forest_equals_sklearn_regressor() -> None:
    data = load_diabetes()
    estimator = RandomForestRegressor(n_estimators=20, random_state=0).fit(data.data, data.target)
    fast = serve_model.FastForest.build(estimator, 10)
    assert fast is not None
    result = fast.predict(data.data)
    assert result is not None and result[1] is None
    assert np.array_equal(result[0], estimator.predict(data.data))


def test_fast_forest_leaves_odd_rows_to_sklearn(tmp_path: Path) -> None:
    model = models.breast_cancer_model(tmp_path / "rf", "rf")
    served = serve_model.load_model_dir(model.path, name="rf", version="1")
    assert served.fast_forest is not None
    assert served.fast_forest.predict(np.full((1, 30), np.nan)) is None
    assert served.fast_forest.predict(np.ones((1, 29))) is None
    nan_rows = model.x[:3].copy()
    nan_rows[1, 2] = np.nan  # sklearn's own path decides (recent forests accept missing values)
    assert np.array_equal(served.predict(nan_rows, proba=False)[0], model.estimator.predict(nan_rows))
    with pytest.raises(ValueError):  # sklearn's own error, so the server answers 400
        served.predict(np.ones((1, 29)), proba=True)
    predictions, probabilities = served.predict(model.x[:50], proba=True)
    assert np.array_equal(predictions, model.predict(model.x[:50]))
    assert probabilities is not None and np.array_equal(probabilities, model.predict_proba(model.x[:50]))


def test_no_fast_path_for_other_estimators(tmp_path: Path) -> None:
    served = serve_model.load_model_dir(models.iris_classifier(tmp_path / "lr").path, name="lr", version="1")
    assert served.fast_forest is None and served.has_proba and served.proba_gives_predict

    class MyForest(RandomForestClassifier):
        pass

    data = load_iris()
    assert serve_model.FastForest.build(MyForest(n_estimators=3).fit(data.data, data.target), 4) is None


def test_model_dir_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        serve_model.load_model_dir(tmp_path / "none", name="x", version="1")
    (tmp_path / "metadata.json").write_text("{}")
    with pytest.raises(UserError, match=r"\.skops"):
        serve_model.load_model_dir(tmp_path, name="x", version="1")
    model = models.iris_classifier(tmp_path / "iris")
    with pytest.raises(UserError, match="sha256"):
        serve_model.load_model_dir(model.path, name="x", version="1", expected_sha256="0" * 64)
