"""Version numbers: the next free number of the model in the namespace, never the same one twice."""

from __future__ import annotations

import threading

from support.kubelet import FakeKubelet
from support.lifecycle import API_VERSION, Objects, ready_dataset, trained_run, training_run_manifest
from support.operator import OperatorProcess

RUNS = ("alpha", "beta", "gamma")


def test_runs_of_one_model_finishing_at_the_same_moment_get_distinct_versions(
    operator: OperatorProcess, objects: Objects, kubelet: FakeKubelet
) -> None:
    ready_dataset(objects, kubelet)
    created = {name: objects.create(training_run_manifest(name)) for name in RUNS}
    # Train all three first, then report the three pods done at once: the Jobs complete together
    # and the operator registers the versions concurrently.
    pods = {
        name: kubelet.pending_pod(objects.namespace, objects.wait_job(f"{name}-train")["metadata"]["name"])
        for name in RUNS
    }
    results = {name: kubelet.run(pod) for name, pod in pods.items()}
    assert all(r.exit_code == 0 for r in results.values()), {n: r.stderr[-500:] for n, r in results.items()}
    barrier = threading.Barrier(len(RUNS))

    def report(name: str) -> None:
        barrier.wait()
        kubelet.report(pods[name], exit_code=0, message=results[name].message)

    threads = [threading.Thread(target=report, args=(name,)) for name in RUNS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    finished = {name: objects.wait_condition("TrainingRun", name, "Succeeded") for name in RUNS}
    numbers = sorted(run["status"]["version"] for run in finished.values())
    assert numbers == [1, 2, 3]
    versions = {v["metadata"]["name"]: v for v in objects.list("ModelVersion")}
    assert sorted(versions) == ["iris-v1", "iris-v2", "iris-v3"]
    for name, run in finished.items():
        version = versions[run["status"]["modelVersion"]]
        assert version["spec"]["version"] == run["status"]["version"]
        assert (
            version["metadata"]["labels"]["modelcycle.io/training-run-uid"]
            == created[name]["metadata"]["uid"]
        )
        assert version["spec"]["artifact"] == results[name].result["artifact"]


def test_numbers_skip_hand_registered_versions_and_taken_names(
    operator: OperatorProcess, objects: Objects, kubelet: FakeKubelet
) -> None:
    ready_dataset(objects, kubelet)
    trained_run(objects, kubelet, "first")
    artifact = objects.get("ModelVersion", "iris-v1")["spec"]["artifact"]  # type: ignore[index]
    # Someone registers version 2 under a name of their own, and takes the name iris-v3 for a
    # version numbered 1 of another model.
    for name, model, number in (("iris-imported", "iris", 2), ("iris-v3", "iris-other", 1)):
        objects.create(
            {
                "apiVersion": API_VERSION,
                "kind": "ModelVersion",
                "metadata": {"name": name},
                "spec": {"model": model, "version": number, "artifact": artifact},
            }
        )

    second = trained_run(objects, kubelet, "second")

    # 3 is the next free number, but the name iris-v3 is taken by someone else: 4.
    assert second["status"]["version"] == 4 and second["status"]["modelVersion"] == "iris-v4"
    assert objects.get("ModelVersion", "iris-v4")["spec"]["version"] == 4  # type: ignore[index]
    # Another model's numbers are its own.
    objects.create(training_run_manifest("wine-run", model="wine"))
    objects.wait_job("wine-run-train")
    kubelet.complete(objects.namespace, "wine-run-train")
    wine = objects.wait_condition("TrainingRun", "wine-run", "Succeeded")
    assert wine["status"]["modelVersion"] == "wine-v1"
