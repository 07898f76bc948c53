"""Drift benchmark: ModelCycle's profile and drift code against alibi-detect and Evidently (not a test).

    python benchmarks/drift.py [--shapes arrays,frames,streaming] [--rows 100000] [--repeats 3]

Three measurements, each selected with --shapes (all by default), peers run in the same invocation:

`arrays` - numpy arrays with integer-coded categoricals. 100k reference rows and 100k current rows
of 50 features (40 numeric of several shapes, 10 categorical), generated with a fixed seed. Known
drift in 10 features: 4 numeric mean shifts of 0.25 standard deviations, 3 numeric variance changes
(standard deviation x 1.2), 3 categorical frequency changes (5 to 8 percentage points moved between
categories). Everything else is drawn again from the reference distribution. Contenders, each on the
same arrays (saved once as .npz), each timed end to end from raw arrays to the per-feature verdicts:

- ours: the reference binning (20 quantile bins per numeric feature, as the profile does;
  category counts), the current data counted over the same bins, then `drift.detect` (binned KS
  for numeric, chi-squared for categorical, Holm across features, alpha 0.05). Also timed alone:
  `drift.detect` on counts, which is what the server and the monitor run (the counts are kept live).
- alibi-detect `TabularDrift(x_ref, p_val=0.05, categories_per_feature=...)` then `.predict(x)`
  (KS on raw samples for numeric, chi-squared for categorical, Bonferroni), in its own virtualenv.
- Evidently's default `DataDriftPreset` report (for 100k rows: normed Wasserstein distance > 0.1
  for numeric, Jensen-Shannon distance > 0.1 for categorical), in its own virtualenv.

`frames` - the real input: pandas DataFrames, 100k x 100k rows x 50 features, 40 numeric (float64)
and 10 string categoricals (object columns of str, 3 to 8 categories), 17 drifted features (12
numeric, 5 categorical). Two steps timed apart, each from the DataFrame in hand to its result:

- ours: `profile.build_profile(reference)` (the Dataset profile: statistics, 20 quantile bins per
  numeric feature, category counts) against alibi's fit: the reference encoded for it (string
  categoricals to integer codes, one float matrix) and `TabularDrift(...)`;
- ours: `drift.count_frame(profile, current)` then `drift.detect` against alibi's score: the
  current frame encoded with the reference's codes and `.predict(x, drift_type="feature")`.

`streaming` - the model server's per-request cost of counting: requests of 1 and 64 rows are built
as Open Inference Protocol JSON (FP64 tensors for numeric features, BYTES for string ones), decoded
by `serve_protocol.decode_infer` as the server does, and each decoded request is binned into the
drift window (`LiveWindow.bin_rows` + `add`, with a prediction column). Microseconds per request, for
the `frames` features (object rows with strings) and the `arrays` features (float rows). Run it with
PYTHONPATH pointing at another checkout's `operator/` to compare before and after a change.

Printed: time of each (median of --repeats), ratios, and precision/recall of the flagged features.
Results are also written to ~/.cache/modelcycle/bench/drift-results.json (MODELCYCLE_BENCH moves it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(os.environ.get("MODELCYCLE_BENCH", Path.home() / ".cache" / "modelcycle" / "bench"))
N_NUMERIC = 40
N_CATEGORICAL = 10
BINS = 20
ALPHA = 0.05

ALIBI_WORKER = r"""
import json, sys, time
import numpy as np
from alibi_detect.cd import TabularDrift
import alibi_detect

data = np.load(sys.argv[1])
repeats = int(sys.argv[2])
ref = np.hstack([data["ref_num"], data["ref_cat"].astype(np.float64)])
cur = np.hstack([data["cur_num"], data["cur_cat"].astype(np.float64)])
n_num = data["ref_num"].shape[1]
categories = {n_num + i: None for i in range(data["ref_cat"].shape[1])}
times = []
for _ in range(repeats):
    started = time.perf_counter()
    detector = TabularDrift(ref, p_val=0.05, categories_per_feature=categories)
    result = detector.predict(cur, drift_type="feature")
    times.append(time.perf_counter() - started)
flags = np.asarray(result["data"]["is_drift"]).astype(bool)
print(json.dumps({"times": times, "flagged": np.flatnonzero(flags).tolist(),
                  "version": alibi_detect.__version__}))
"""

FRAMES_CODE = r"""
import numpy as np
import pandas as pd


def frames(path, strings):
    data = np.load(path)
    n_num = data["ref_num"].shape[1]
    names = [f"f{i}" for i in range(n_num + data["ref_cat"].shape[1])]

    def frame(num, cat):
        columns = {names[j]: num[:, j] for j in range(n_num)}
        for j in range(cat.shape[1]):
            column = cat[:, j]
            # "object": str objects in an object column (pandas 3 would infer its `str` dtype)
            columns[names[n_num + j]] = pd.Series(column, dtype=object) if strings == "object" else column
        return pd.DataFrame(columns)

    return frame(data["ref_num"], data["ref_cat"]), frame(data["cur_num"], data["cur_cat"]), n_num
"""

ALIBI_FRAMES_WORKER = (
    FRAMES_CODE
    + r"""
import json, sys, time
from alibi_detect.cd import TabularDrift
import alibi_detect

ref, cur, n_num = frames(sys.argv[1], sys.argv[3])
repeats = int(sys.argv[2])
dtype = np.dtype(sys.argv[4])
numeric, categorical = list(ref.columns[:n_num]), list(ref.columns[n_num:])


def matrix(frame, codes):
    # one matrix: the numeric columns as they are, then the categoricals' integer codes
    x = np.empty((len(frame), frame.shape[1]), dtype=dtype)
    x[:, :n_num] = frame[numeric].to_numpy(dtype=dtype)
    for j, name in enumerate(categorical):
        x[:, n_num + j] = codes[name]
    return x


fit, score = [], []
for _ in range(repeats):
    started = time.perf_counter()
    # the reference's categories and codes in one hash pass per column
    factorized = {name: pd.factorize(ref[name]) for name in categorical}
    categories = {name: uniques for name, (_, uniques) in factorized.items()}
    detector = TabularDrift(
        matrix(ref, {name: codes for name, (codes, _) in factorized.items()}), p_val=0.05,
        categories_per_feature={n_num + j: len(categories[n]) for j, n in enumerate(categorical)},
    )
    middle = time.perf_counter()
    # the current values coded with the reference's categories (unseen -> -1, not counted)
    codes = {name: categories[name].get_indexer(cur[name]) for name in categorical}
    result = detector.predict(matrix(cur, codes), drift_type="feature")
    done = time.perf_counter()
    fit.append(middle - started)
    score.append(done - middle)
flags = np.asarray(result["data"]["is_drift"]).astype(bool)
print(json.dumps({"fitTimes": fit, "scoreTimes": score, "flagged": np.flatnonzero(flags).tolist(),
                  "version": alibi_detect.__version__, "numpy": np.__version__, "pandas": pd.__version__}))
"""
)

EVIDENTLY_WORKER = r"""
import json, sys, time
import numpy as np
import pandas as pd
import evidently

data = np.load(sys.argv[1])
repeats = int(sys.argv[2])
names = [f"f{i}" for i in range(data["ref_num"].shape[1] + data["ref_cat"].shape[1])]
n_num = data["ref_num"].shape[1]

def frame(num, cat):
    df = pd.DataFrame(num, columns=names[:n_num])
    for i in range(cat.shape[1]):
        df[names[n_num + i]] = cat[:, i].astype(str)
    return df

ref, cur = frame(data["ref_num"], data["ref_cat"]), frame(data["cur_num"], data["cur_cat"])
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset

definition = DataDefinition(numerical_columns=names[:n_num], categorical_columns=names[n_num:])
times = []
for _ in range(repeats):
    started = time.perf_counter()
    reference = Dataset.from_pandas(ref, data_definition=definition)
    current = Dataset.from_pandas(cur, data_definition=definition)
    snapshot = Report([DataDriftPreset()]).run(current, reference)
    result = snapshot.dict()
    times.append(time.perf_counter() - started)
flagged = []
methods = set()
for metric in result["metrics"]:
    config = metric.get("config", {})
    column = config.get("column")
    name = str(metric.get("metric_name") or metric.get("metric_id") or "")
    if column is None or not name.startswith("ValueDrift"):
        continue
    threshold = config.get("threshold")
    method = config.get("method", "")
    methods.add(str(method))
    value = metric["value"]
    is_p_value = "p_value" in str(method) or str(method) in ("ks", "chisquare", "z", "fisher_exact")
    drifted = value < threshold if is_p_value else value >= threshold
    if drifted:
        flagged.append(names.index(column))
print(json.dumps({"times": times, "flagged": sorted(flagged), "version": evidently.__version__,
                  "methods": sorted(methods)}))
"""


# --------------------------------------------------------------------------- data


SHIFTED = (3, 11, 22, 35)
"""`arrays`: numeric features whose mean moves by a quarter standard deviation."""
SCALED = (6, 17, 29)
"""`arrays`: numeric features whose standard deviation grows by 20%."""
MOVED = (1, 4, 8)
"""`arrays`: categorical features (0-based among the categoricals) with 5-8 points of frequency moved."""
FRAMES_DRIFT = {"shifted": (3, 7, 11, 18, 22, 35), "scaled": (1, 6, 17, 29, 30, 38), "moved": (1, 3, 4, 6, 8)}
"""`frames`: 17 drifted features, 12 numeric and 5 string categorical."""
CATEGORY_NAMES = np.array(["red", "green", "blue", "amber", "violet", "north-east", "n/a", "XL"])


def make_data(
    rows: int,
    seed: int = 20261126,
    *,
    shifted: tuple[int, ...] = SHIFTED,
    scaled: tuple[int, ...] = SCALED,
    moved: tuple[int, ...] = MOVED,
) -> tuple[dict[str, np.ndarray], list[int]]:
    """Reference and current arrays, and the indices of the features that drift."""
    rng = np.random.default_rng(seed)
    ref_num = np.empty((rows, N_NUMERIC))
    cur_num = np.empty((rows, N_NUMERIC))
    drifted: list[int] = []
    shapes = ["normal", "lognormal", "uniform", "gamma"]
    for j in range(N_NUMERIC):
        shape = shapes[j % 4]
        scale = 1.0 + j % 5
        if shape == "normal":
            draw = lambda n, s=scale: rng.normal(3.0, s, n)  # noqa: E731
        elif shape == "lognormal":
            draw = lambda n, s=scale: s * rng.lognormal(0.0, 0.5, n)  # noqa: E731
        elif shape == "uniform":
            draw = lambda n, s=scale: rng.uniform(-s, s, n)  # noqa: E731
        else:
            draw = lambda n, s=scale: rng.gamma(2.0, s, n)  # noqa: E731
        ref_num[:, j] = draw(rows)
        cur = draw(rows)
        sd = float(ref_num[:, j].std())
        if j in shifted:  # mean shift of a quarter standard deviation
            cur = cur + 0.25 * sd
            drifted.append(j)
        elif j in scaled:  # variance change: standard deviation x 1.2 around the mean
            mean = float(ref_num[:, j].mean())
            cur = mean + (cur - mean) * 1.2
            drifted.append(j)
        cur_num[:, j] = cur
    ref_cat = np.empty((rows, N_CATEGORICAL), dtype=np.int64)
    cur_cat = np.empty((rows, N_CATEGORICAL), dtype=np.int64)
    for j in range(N_CATEGORICAL):
        k = 3 + j % 6
        p = rng.dirichlet(np.full(k, 5.0))
        ref_cat[:, j] = rng.choice(k, rows, p=p)
        q = p.copy()
        if j in moved:  # move 5-8 percentage points from the most to the least frequent category
            amount = min(0.05 + 0.01 * j, 0.5 * q.max())
            q[np.argmax(q)] -= amount
            q[np.argmin(p)] += amount
            drifted.append(N_NUMERIC + j)
        cur_cat[:, j] = rng.choice(k, rows, p=q)
    arrays = {"ref_num": ref_num, "cur_num": cur_num, "ref_cat": ref_cat, "cur_cat": cur_cat}
    return arrays, sorted(drifted)


def make_frames(rows: int) -> tuple[dict[str, np.ndarray], list[int]]:
    """`frames` arrays: as `make_data` with 17 drifted features, categoricals as strings."""
    arrays, truth = make_data(rows, **FRAMES_DRIFT)
    arrays["ref_cat"] = CATEGORY_NAMES[arrays["ref_cat"]]
    arrays["cur_cat"] = CATEGORY_NAMES[arrays["cur_cat"]]
    return arrays, truth


# --------------------------------------------------------------------------- ours


def reference_profile(ref_num: np.ndarray, ref_cat: np.ndarray) -> dict[str, Any]:
    """The reference binning in the profile's format: quantile edges and counts, category counts."""
    from modelcycle.workloads import drift

    features: list[dict[str, Any]] = []
    for j in range(ref_num.shape[1]):
        edges, counts, _ = drift.reference_bins(ref_num[:, j], BINS)
        features.append(
            {
                "name": f"f{j}",
                "kind": "numeric",
                "binEdges": edges.tolist(),
                "referenceCounts": counts.tolist(),
            }
        )
    for j in range(ref_cat.shape[1]):
        counts = np.bincount(ref_cat[:, j])
        present = np.flatnonzero(counts)
        features.append(
            {
                "name": f"f{ref_num.shape[1] + j}",
                "kind": "categorical",
                "categories": [drift.category_label(int(c)) for c in present],
                "categoryCounts": counts[present].tolist(),
            }
        )
    return {"version": 1, "rows": len(ref_num), "features": features}


def live_counts(profile: dict[str, Any], cur_num: np.ndarray, cur_cat: np.ndarray) -> dict[str, Any]:
    """What the servers' windows hold for these rows: counts over the reference bins."""
    from modelcycle.workloads import drift

    features: dict[str, Any] = {}
    columns = np.hstack([cur_num, cur_cat])
    for j, fb in enumerate(drift.feature_bins(profile)):
        counts, nulls = fb.count(columns[:, j])
        features[fb.name] = {"counts": counts, "nulls": nulls}
    return {"rows": len(cur_num), "features": features}


def run_ours(arrays: dict[str, np.ndarray], repeats: int) -> dict[str, Any]:
    from modelcycle.workloads import drift

    end_to_end: list[float] = []
    detect_only: list[float] = []
    result: dict[str, Any] = {}
    for _ in range(repeats):
        started = time.perf_counter()
        profile = reference_profile(arrays["ref_num"], arrays["ref_cat"])
        live = live_counts(profile, arrays["cur_num"], arrays["cur_cat"])
        middle = time.perf_counter()
        result = drift.detect(profile, live, method="ks", threshold=ALPHA, min_samples=200)
        done = time.perf_counter()
        end_to_end.append(done - started)
        detect_only.append(done - middle)
    flagged = [int(r["name"][1:]) for r in result["features"] if r["drifted"]]
    return {"times": end_to_end, "detectTimes": detect_only, "flagged": sorted(flagged)}


def load_frames(data: Path, strings: str) -> tuple[Any, Any, int]:
    """The reference and current DataFrames of `data`, built by the same code as the peers'."""
    namespace: dict[str, Any] = {}
    exec(FRAMES_CODE, namespace)
    return namespace["frames"](data, strings)  # type: ignore[no-any-return]


def frame_features(ref: Any, n_num: int) -> list[tuple[str, str, str]]:
    return [
        (str(n), "numeric" if j < n_num else "categorical", str(ref[n].dtype))
        for j, n in enumerate(ref.columns)
    ]


def run_ours_frames(data: Path, strings: str, repeats: int) -> dict[str, Any]:
    """`profile.build_profile` (fit) and `drift.count_frame` + `drift.detect` (score), each timed."""
    from modelcycle.workloads import drift, profile

    ref, cur, n_num = load_frames(data, strings)
    features = frame_features(ref, n_num)
    fit: list[float] = []
    score: list[float] = []
    result: dict[str, Any] = {}
    for _ in range(repeats):
        started = time.perf_counter()
        doc = profile.build_profile(ref, features=features, target="target", task="regression", bins=BINS)
        middle = time.perf_counter()
        result = drift.detect(doc, drift.count_frame(doc, cur), method="ks", threshold=ALPHA, min_samples=200)
        done = time.perf_counter()
        fit.append(middle - started)
        score.append(done - middle)
    flagged = [int(r["name"][1:]) for r in result["features"] if r["drifted"]]
    return {
        "fitTimes": fit,
        "scoreTimes": score,
        "flagged": sorted(flagged),
        "dtypes": sorted(set(ref.dtypes.astype(str))),
    }


def run_streaming(data: Path, arrays_data: Path, requests: int, repeats: int) -> dict[str, Any]:
    """Microseconds per decoded request to bin it into the server's drift window (bin_rows + add)."""
    import orjson

    from modelcycle.workloads import drift, profile, serve_protocol, serve_stats
    from modelcycle.workloads.serve_model import Feature, ServedModel

    out: dict[str, Any] = {}
    rng = np.random.default_rng(7)
    for shape, path, strings in (("frames", data, True), ("arrays", arrays_data, False)):
        ref, cur, n_num = load_frames(path, "object")
        if not strings:  # the arrays shape: integer-coded categoricals, sent as numbers
            for name in ref.columns[n_num:]:
                ref[name] = ref[name].astype(np.int64)
                cur[name] = cur[name].astype(np.int64)
        features = frame_features(ref, n_num)
        doc = profile.build_profile(ref, features=features, target="target", task="regression", bins=BINS)
        served = [
            Feature(
                n, "numeric" if k == "numeric" else "categorical", "object" if d == "object" else "float64"
            )
            for n, k, d in features
        ]
        model = ServedModel("m", "1", None, served, "regression", None, target="target")
        position = {n: i for i, n in enumerate(model.feature_names)}
        columns = [serve_stats.Column(fb, position[fb.name]) for fb in drift.feature_bins(doc)]
        prediction = serve_stats.Column(serve_stats.prediction_bins("regression", None, doc, "target"), -1)
        for batch in (1, 64):
            decoded = []
            for _ in range(requests):
                rows = cur.iloc[rng.integers(0, len(cur), batch)]
                inputs = [
                    {
                        "name": n,
                        "shape": [batch],
                        "datatype": "BYTES" if rows[n].dtype == object else "FP64",
                        "data": rows[n].tolist(),
                    }
                    for n in model.feature_names
                ]
                decoded.append(serve_protocol.decode_infer(orjson.dumps({"inputs": inputs}), None, model).x)
            predictions = np.zeros(batch)
            times = []
            for _ in range(repeats):
                window = serve_stats.LiveWindow([*columns, prediction], 10_000)
                started = time.perf_counter()
                for x in decoded:
                    window.add(window.bin_rows(x, predictions))
                times.append((time.perf_counter() - started) / requests * 1e6)
            out[f"{shape}, batch {batch}"] = {"microseconds": times, "dtype": str(decoded[0].dtype)}
    return out


# --------------------------------------------------------------------------- peers


def ensure_venv(name: str, packages: list[str]) -> Path | str:
    """The peer's virtualenv, or the reason it could not be made."""
    venv = BENCH / name
    python = venv / "bin" / "python"
    stamp = venv / ".bench-installed"
    if stamp.exists() and stamp.read_text() == json.dumps(packages):
        return python
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", *packages],
            check=True,
            capture_output=True,
            text=True,
        )
    except subprocess.CalledProcessError as exc:
        return f"pip install {' '.join(packages)} failed: {(exc.stderr or '')[-800:]}"
    stamp.write_text(json.dumps(packages))
    return python


def run_peer(
    name: str, packages: list[str], worker: str, data: Path, repeats: int, *extra: str
) -> dict[str, Any]:
    python = ensure_venv(name, packages)
    if isinstance(python, str):
        return {"error": python}
    script = BENCH / f"drift_{name}_{len(worker)}_worker.py"
    script.write_text(worker)
    proc = subprocess.run(
        [str(python), str(script), str(data), str(repeats), *extra],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if proc.returncode != 0:
        return {"error": f"{name} failed (exit {proc.returncode}): {proc.stderr[-1500:]}"}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


# --------------------------------------------------------------------------- report


def precision_recall(flagged: list[int], truth: list[int]) -> tuple[float, float]:
    hits = len(set(flagged) & set(truth))
    precision = hits / len(flagged) if flagged else 1.0
    return precision, hits / len(truth)


def report_arrays(args: argparse.Namespace) -> dict[str, Any]:
    arrays, truth = make_data(args.rows)
    data = BENCH / f"drift-data-{args.rows}.npz"
    np.savez(data, **arrays)
    print(
        f"\n## arrays: {args.rows} reference x {args.rows} current rows, {N_NUMERIC + N_CATEGORICAL} "
        f"features (categoricals integer-coded); drifted: {truth}"
    )

    results: dict[str, dict[str, Any]] = {"ours": run_ours(arrays, args.repeats)}
    peers = {
        "alibi": (["alibi-detect"], ALIBI_WORKER, args.repeats),
        # Evidently 0.7 imports pandas.core.dtypes.common.infer_dtype_from_object, gone in pandas 3
        "evidently": (["evidently", "pandas<3"], EVIDENTLY_WORKER, args.evidently_repeats),
    }
    for name in args.peers.split(","):
        if name:
            packages, worker, repeats = peers[name]
            results[name] = run_peer(name, packages, worker, data, repeats)

    ours_time = statistics.median(results["ours"]["times"])
    print("\n| contender | seconds (median) | ours faster by | flagged | precision | recall |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, res in results.items():
        if "error" in res:
            print(
                f"| {name} | - | - | - | - | - |  ({res['error'].splitlines()[-1] if res['error'] else ''})"
            )
            continue
        seconds = statistics.median(res["times"])
        precision, recall = precision_recall(res["flagged"], truth)
        label = name + (f" {res['version']}" if "version" in res else "")
        print(
            f"| {label} | {seconds:.3f} | {seconds / ours_time:.1f}x | {len(res['flagged'])} | "
            f"{precision:.2f} | {recall:.2f} |"
        )
    detect = statistics.median(results["ours"]["detectTimes"])
    print(f"| ours, detect() on live counts only | {detect:.4f} | - | - | - | - |")
    print(
        f"\nours flagged {results['ours']['flagged']}; "
        f"exactly the drifted ones: {results['ours']['flagged'] == truth}"
    )
    verdicts(results, truth)
    return {"truth": truth, "results": results}


def verdicts(results: dict[str, dict[str, Any]], truth: list[int]) -> None:
    for name, res in results.items():
        if "flagged" in res:
            missed = sorted(set(truth) - set(res["flagged"]))
            extra = sorted(set(res["flagged"]) - set(truth))
            print(
                f"{name}: flagged {len(res['flagged'])}, missed {missed}, false alarms {extra}"
                + (f", methods {res['methods']}" if res.get("methods") else "")
            )
        else:
            print(f"\n{name} could not run:\n{res['error']}")


def report_frames(args: argparse.Namespace) -> dict[str, Any]:
    arrays, truth = make_frames(args.rows)
    data = BENCH / f"drift-frames-{args.rows}.npz"
    np.savez(data, **arrays)
    out: dict[str, Any] = {"truth": truth}
    for strings in args.strings.split(","):
        results = {"ours": run_ours_frames(data, strings, args.repeats)}
        alibi = run_peer(
            "alibi", ["alibi-detect"], ALIBI_FRAMES_WORKER, data, args.repeats, strings, args.alibi_dtype
        )
        results["alibi"] = alibi
        print(
            f"\n## frames: {args.rows} x {args.rows} rows, {N_NUMERIC} numeric + {N_CATEGORICAL} string "
            f"categorical features; drifted ({len(truth)}): {truth}\n"
            f"string columns built as {strings!r}: ours {results['ours']['dtypes']}"
            + (
                f"; alibi-detect {alibi['version']} (numpy {alibi['numpy']}, pandas {alibi['pandas']}), "
                f"matrix {args.alibi_dtype}"
                if "version" in alibi
                else ""
            )
        )
        print("\n| step (median of runs) | ours s | alibi-detect s | ours faster by |")
        print("|---|---:|---:|---:|")
        rows = [
            ("build the reference profile / `TabularDrift(...)` fit", "fitTimes"),
            ("count current values + `drift.detect` / `predict` (score)", "scoreTimes"),
        ]
        totals = {}
        for name, res in results.items():
            if "fitTimes" in res:
                totals[name] = statistics.median(np.add(res["fitTimes"], res["scoreTimes"]).tolist())
        for label, key in rows:
            ours = statistics.median(results["ours"][key])
            peer = statistics.median(alibi[key]) if key in alibi else float("nan")
            print(f"| {label} | {ours:.3f} | {peer:.3f} | {peer / ours:.1f}x |")
        if "alibi" in totals:
            print(
                f"| total | {totals['ours']:.3f} | {totals['alibi']:.3f} | "
                f"{totals['alibi'] / totals['ours']:.1f}x |"
            )
        verdicts(results, truth)
        out[strings] = results
    return out


def report_streaming(args: argparse.Namespace) -> dict[str, Any]:
    frames, _ = make_frames(args.rows)
    arrays, _ = make_data(args.rows)
    frames_data = BENCH / f"drift-frames-{args.rows}.npz"
    arrays_data = BENCH / f"drift-data-{args.rows}.npz"
    np.savez(frames_data, **frames)
    np.savez(arrays_data, **arrays)
    from modelcycle.workloads import drift

    results = run_streaming(frames_data, arrays_data, args.requests, args.repeats)
    print(
        f"\n## streaming: per-request counting in the server (decoded request -> bin_rows + add), "
        f"{args.requests} requests, modelcycle from {Path(drift.__file__).parent}"
    )
    print("\n| features, rows per request | decoded rows | us per request (median) | min |")
    print("|---|---|---:|---:|")
    for label, res in results.items():
        times = res["microseconds"]
        print(f"| {label} | {res['dtype']} | {statistics.median(times):.1f} | {min(times):.1f} |")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shapes", default="arrays,frames,streaming")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per contender (median reported)")
    parser.add_argument("--evidently-repeats", type=int, default=1)
    parser.add_argument("--peers", default="alibi,evidently", help="peers of the arrays shape")
    parser.add_argument(
        "--strings",
        default="pandas,object",
        help="frames: string columns as pandas builds them from str arrays, and/or as object columns",
    )
    parser.add_argument("--alibi-dtype", default="float64", help="frames: dtype of alibi-detect's matrix")
    parser.add_argument("--requests", type=int, default=2000, help="streaming: decoded requests per run")
    args = parser.parse_args()

    BENCH.mkdir(parents=True, exist_ok=True)
    reports = {"arrays": report_arrays, "frames": report_frames, "streaming": report_streaming}
    results = {shape: reports[shape](args) for shape in args.shapes.split(",") if shape}
    load = os.getloadavg()
    print(
        f"\nmachine: {os.cpu_count()} CPUs, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} at the end"
    )
    (BENCH / "drift-results.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
