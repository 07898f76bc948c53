"""How much `modelcycle train` costs on top of fitting the estimator yourself.

Both sides start a fresh interpreter and fit the same estimator on the same snapshot:

- workload: `python -m modelcycle train ...` (spec parsing, sha256 check of the snapshot, pipeline,
  split, fit, holdout metrics, skops dump and type check, atomic writes, result JSON);
- direct:   `python -c "import pandas, sklearn...; read the parquet; Estimator(**params).fit(X, y)"`
  on as many rows as the workload's training split.

Runs are interleaved, several repetitions each; the report gives the median and the fastest wall
time of each side and the difference of the medians (the overhead). Target: < 1.5 s.

    python benchmarks/train_overhead.py [--dataset breast_cancer] [--repeat 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_SECONDS = 1.5
ESTIMATOR = "sklearn.ensemble.RandomForestClassifier"
PARAMS = {"n_estimators": 100, "random_state": 0}
TRAIN_FRACTION = 0.8  # the workload fits on the training split: the direct fit gets as many rows


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds user+system) of one child process."""
    before = os.times()
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - start
    after = os.times()
    if proc.returncode != 0:
        raise SystemExit(
            f"command failed ({proc.returncode}): {' '.join(cmd[:4])} ...\n{proc.stderr[-2000:]}"
        )
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return elapsed, cpu


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dataset", default="breast_cancer", choices=["iris", "wine", "breast_cancer", "diabetes", "digits"]
    )
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    regression = args.dataset == "diabetes"
    estimator = ESTIMATOR.replace("Classifier", "Regressor") if regression else ESTIMATOR
    params = PARAMS
    py = sys.executable
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "0"}

    with tempfile.TemporaryDirectory(prefix="modelcycle-bench-") as tmp:
        store = Path(tmp) / "store"
        dataset = {
            "kind": "Dataset",
            "metadata": {"name": "bench"},
            "spec": {"source": {"builtin": {"name": args.dataset}}},
        }
        data_cmd = [py, "-m", "modelcycle", "data", "--spec-json", json.dumps(dataset), "--store", str(store)]
        proc = subprocess.run(
            [*data_cmd, "--termination-log", "-"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        )
        snap = json.loads(proc.stdout.strip().splitlines()[-1])
        parquet = store / snap["uri"][len("pvc://") :]
        run_obj = {
            "kind": "TrainingRun",
            "metadata": {"name": "bench", "namespace": "bench"},
            "spec": {"datasetRef": {"name": "bench"}, "model": {"name": "bench"},
                     "estimator": {"class": estimator, "params": params}},
        }  # fmt: skip
        module, _, cls = estimator.rpartition(".")
        direct_code = (
            "import pandas as pd; "
            f"from {module} import {cls}; "
            f"df = pd.read_parquet({str(parquet)!r}); "
            f"df = df.sample(frac={TRAIN_FRACTION}, random_state=0); "
            "X = df.drop(columns=['target']); y = df['target']; "
            f"{cls}(**{params!r}).fit(X, y)"
        )

        def workload(i: int) -> list[str]:
            return [
                py, "-m", "modelcycle", "train", "--spec-json", json.dumps(run_obj),
                "--dataset-uri", snap["uri"], "--dataset-sha256", snap["sha256"],
                "--store", str(store), "--name", f"bench-{i}", "--termination-log", "-",
            ]  # fmt: skip

        direct_cmd = [py, "-c", direct_code]
        # one warm-up each (page cache, .pyc files), not counted
        run(workload(0), env)
        run(direct_cmd, env)
        ours: list[tuple[float, float]] = []
        theirs: list[tuple[float, float]] = []
        for i in range(1, args.repeat + 1):
            ours.append(run(workload(i), env))
            theirs.append(run(direct_cmd, env))

    def summary(samples: list[tuple[float, float]], k: int) -> tuple[float, float]:
        values = [s[k] for s in samples]
        return statistics.median(values), min(values)

    wall_ours, wall_direct = summary(ours, 0), summary(theirs, 0)
    cpu_ours, cpu_direct = summary(ours, 1), summary(theirs, 1)
    overhead = wall_ours[0] - wall_direct[0]
    print(f"dataset {args.dataset} ({snap['rows']} rows), estimator {estimator}, {args.repeat} runs each")
    print("                   wall median   wall fastest   CPU median (user+sys)")
    print(f"modelcycle train : {wall_ours[0]:9.3f} s   {wall_ours[1]:10.3f} s   {cpu_ours[0]:9.3f} s")
    print(f"direct fit       : {wall_direct[0]:9.3f} s   {wall_direct[1]:10.3f} s   {cpu_direct[0]:9.3f} s")
    print(
        f"overhead         : {overhead:9.3f} s   {wall_ours[1] - wall_direct[1]:10.3f} s   "
        f"{cpu_ours[0] - cpu_direct[0]:9.3f} s   (target < {TARGET_SECONDS} s wall)"
    )
    print("PASS" if overhead < TARGET_SECONDS else "FAIL")
    return 0 if overhead < TARGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
