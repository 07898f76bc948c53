"""Drift benchmark: ModelCycle's drift.py against alibi-detect and Evidently (not a test).

    ~/.cache/modelcycle/venv/bin/python benchmarks/drift.py [--rows 100000] [--repeats 3]

Data: 100k reference rows and 100k current rows of 50 features (40 numeric of several shapes, 10
categorical), generated with a fixed seed. Known drift in 10 features: 4 numeric mean shifts of
0.25 standard deviations, 3 numeric variance changes (standard deviation x 1.2), 3 categorical
frequency changes (5 to 8 percentage points moved between categories). Everything else is drawn
again from the reference distribution.

Contenders, each on the same arrays (saved once as .npz), each timed end to end from raw arrays
to the per-feature verdicts:

- ours: the reference binning (20 quantile bins per numeric feature, as the profile does;
  category counts), the current data counted over the same bins, then `drift.detect` (binned KS
  for numeric, chi-squared for categorical, Holm across features, alpha 0.05). Also timed alone:
  `drift.detect` on counts, which is what the server and the monitor run (the counts are kept live).
- alibi-detect `TabularDrift(x_ref, p_val=0.05, categories_per_feature=...)` then `.predict(x)`
  (KS on raw samples for numeric, chi-squared for categorical, Bonferroni), in its own virtualenv.
- Evidently's default `DataDriftPreset` report (for 100k rows: normed Wasserstein distance > 0.1
  for numeric, Jensen-Shannon distance > 0.1 for categorical), in its own virtualenv.

Printed: time of each (median of --repeats), ratios, and precision/recall of the flagged features.
Results are also written to ~/.cache/modelcycle/bench/drift-results.json.
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


def make_data(rows: int, seed: int = 20261126) -> tuple[dict[str, np.ndarray], list[int]]:
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
        if j in (3, 11, 22, 35):  # mean shift of a quarter standard deviation
            cur = cur + 0.25 * sd
            drifted.append(j)
        elif j in (6, 17, 29):  # variance change: standard deviation x 1.2 around the mean
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
        if j in (1, 4, 8):  # move 5-8 percentage points from the most to the least frequent category
            moved = min(0.05 + 0.01 * j, 0.5 * q.max())
            q[np.argmax(q)] -= moved
            q[np.argmin(p)] += moved
            drifted.append(N_NUMERIC + j)
        cur_cat[:, j] = rng.choice(k, rows, p=q)
    arrays = {"ref_num": ref_num, "cur_num": cur_num, "ref_cat": ref_cat, "cur_cat": cur_cat}
    return arrays, sorted(drifted)


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


def run_peer(name: str, packages: list[str], worker: str, data: Path, repeats: int) -> dict[str, Any]:
    python = ensure_venv(name, packages)
    if isinstance(python, str):
        return {"error": python}
    script = BENCH / f"drift_{name}_worker.py"
    script.write_text(worker)
    proc = subprocess.run(
        [str(python), str(script), str(data), str(repeats)], capture_output=True, text=True, timeout=3600
    )
    if proc.returncode != 0:
        return {"error": f"{name} failed (exit {proc.returncode}): {proc.stderr[-1500:]}"}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


# --------------------------------------------------------------------------- report


def precision_recall(flagged: list[int], truth: list[int]) -> tuple[float, float]:
    hits = len(set(flagged) & set(truth))
    precision = hits / len(flagged) if flagged else 1.0
    return precision, hits / len(truth)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per contender (median reported)")
    parser.add_argument("--evidently-repeats", type=int, default=1)
    parser.add_argument("--peers", default="alibi,evidently")
    args = parser.parse_args()

    BENCH.mkdir(parents=True, exist_ok=True)
    arrays, truth = make_data(args.rows)
    data = BENCH / f"drift-data-{args.rows}.npz"
    np.savez(data, **arrays)
    print(
        f"{args.rows} reference x {args.rows} current rows, {N_NUMERIC + N_CATEGORICAL} features; "
        f"drifted: {truth}"
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
    for name, res in results.items():
        if name != "ours" and "flagged" in res:
            missed = sorted(set(truth) - set(res["flagged"]))
            extra = sorted(set(res["flagged"]) - set(truth))
            print(
                f"{name}: missed {missed}, false alarms {extra}"
                + (f", methods {res['methods']}" if res.get("methods") else "")
            )
    load = os.getloadavg()
    print(
        f"machine: {os.cpu_count()} CPUs, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} at the end"
    )
    errors = {n: r["error"] for n, r in results.items() if "error" in r}
    for name, error in errors.items():
        print(f"\n{name} could not run:\n{error}")
    (BENCH / "drift-results.json").write_text(json.dumps({"truth": truth, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
