"""Hyperparameter search: the same best parameters as scikit-learn's own search with the same folds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sklearn.model_selection import GridSearchCV, KFold, RandomizedSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from workload_helpers import builtin, run_inproc, snapshot_inproc, train_args, train_inproc, training_run

from modelcycle.api.common import Split
from modelcycle.workloads import metrics, train
from modelcycle.workloads import store as store_mod


@pytest.fixture(scope="module")
def store_and_snaps(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, Any]]]:
    store = tmp_path_factory.mktemp("grid-store")
    return store, {name: snapshot_inproc(builtin(name), store) for name in ("wine", "diabetes")}


def _training_rows(store: Path, snap_result: dict[str, Any], split: Split) -> tuple[Any, Any]:
    snap = train.load_snapshot(snap_result["uri"], snap_result["sha256"], store_mod.LocalStore(store))
    X_train, _, y_train, _ = metrics.holdout_split(snap.X(), snap.y(), snap.task, split)
    return X_train, y_train


def test_grid_search_matches_sklearn_gridsearchcv(
    store_and_snaps: tuple[Path, dict[str, dict[str, Any]]],
) -> None:
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.preprocessing import StandardScaler

    store, snaps = store_and_snaps
    grid = {"n_neighbors": [1, 3, 5, 9, 15], "weights": ["uniform", "distance"]}
    run = training_run(
        "sklearn.neighbors.KNeighborsClassifier",
        name="grid",
        preprocessing=[{"type": "standardScaler"}],
        search={"type": "grid", "params": grid, "folds": 4},
        split={"seed": 5},
    )
    result = train_inproc(run, snaps["wine"], store)

    X_train, y_train = _training_rows(store, snaps["wine"], Split(seed=5))
    reference = GridSearchCV(
        Pipeline([("scale", StandardScaler()), ("estimator", KNeighborsClassifier())]),
        {f"estimator__{k}": v for k, v in grid.items()},
        scoring="accuracy",
        cv=StratifiedKFold(n_splits=4, shuffle=True, random_state=5),
    ).fit(X_train, y_train)
    expected = {k.removeprefix("estimator__"): v for k, v in reference.best_params_.items()}
    assert result["bestParams"] == expected
    assert result["params"]["n_neighbors"] == expected["n_neighbors"]
    metadata = json.loads((store / result["metadataUri"][len("pvc://") :]).read_text())
    assert metadata["search"]["bestScore"] == float(reference.best_score_)
    assert metadata["search"]["trials"] == 10


def test_regression_grid_uses_kfold_and_rmse(store_and_snaps: tuple[Path, dict[str, dict[str, Any]]]) -> None:
    from sklearn.linear_model import Ridge

    store, snaps = store_and_snaps
    grid = {"alpha": [0.01, 0.1, 1.0, 10.0, 100.0]}
    run = training_run("sklearn.linear_model.Ridge", name="ridge-grid", search={"params": grid, "folds": 5})
    result = train_inproc(run, snaps["diabetes"], store)
    X_train, y_train = _training_rows(store, snaps["diabetes"], Split())
    reference = GridSearchCV(
        Pipeline([("estimator", Ridge(random_state=42))]),
        {"estimator__alpha": grid["alpha"]},
        scoring="neg_root_mean_squared_error",
        cv=KFold(n_splits=5, shuffle=True, random_state=42),
    ).fit(X_train, y_train)
    assert result["bestParams"] == {"alpha": reference.best_params_["estimator__alpha"]}


def test_random_search_is_seeded_and_bounded(store_and_snaps: tuple[Path, dict[str, dict[str, Any]]]) -> None:
    from sklearn.tree import DecisionTreeClassifier

    store, snaps = store_and_snaps
    space = {"max_depth": [1, 2, 3, 4, 5, 6], "min_samples_leaf": [1, 2, 4, 8]}
    run = training_run(
        "sklearn.tree.DecisionTreeClassifier",
        name="random",
        search={"type": "random", "params": space, "folds": 3, "maxTrials": 5, "scoring": "f1_macro"},
    )
    result = train_inproc(run, snaps["wine"], store)
    X_train, y_train = _training_rows(store, snaps["wine"], Split())
    reference = RandomizedSearchCV(
        Pipeline([("estimator", DecisionTreeClassifier(random_state=42))]),
        {f"estimator__{k}": v for k, v in space.items()},
        n_iter=5,
        scoring="f1_macro",
        cv=StratifiedKFold(n_splits=3, shuffle=True, random_state=42),
        random_state=42,
    ).fit(X_train, y_train)
    assert result["bestParams"] == {
        k.removeprefix("estimator__"): v for k, v in reference.best_params_.items()
    }
    # more trials than combinations: every combination once, no error
    small = training_run(
        "sklearn.tree.DecisionTreeClassifier",
        name="random-small",
        search={"type": "random", "params": {"max_depth": [1, 2]}, "maxTrials": 50, "folds": 3},
    )
    assert train_inproc(small, snaps["wine"], store)["bestParams"]["max_depth"] in (1, 2)


def test_bad_search_specs_are_refused(store_and_snaps: tuple[Path, dict[str, dict[str, Any]]]) -> None:
    store, snaps = store_and_snaps
    for search, text in (
        ({"params": {"nope": [1, 2]}}, "search parameter 'nope' is not a parameter of the estimator"),
        ({"params": {"C": []}}, "search parameter 'C' has no candidate values"),
        ({"params": {"C": [1.0]}, "scoring": "not-a-scorer"}, "unknown scoring 'not-a-scorer'"),
        ({"params": {"C": [-5.0]}}, "'C' parameter"),
    ):
        run = training_run("sklearn.linear_model.LogisticRegression", name="bad-search", search=search)
        out = run_inproc(train_args(run, snaps["wine"]), store=store)
        assert out.code == 1 and out.result["reason"] == "InvalidParams", out
        assert text in out.result["message"], out.result["message"]
