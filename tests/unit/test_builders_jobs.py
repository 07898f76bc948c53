"""The workload Job builders: names, ownership, Pod Security `restricted`, arguments, determinism."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from modelcycle.api import trainingrun
from modelcycle.builders import jobs, meta, modelversions, pods
from modelcycle.workloads import data as data_workload
from modelcycle.workloads import train as train_workload
from modelcycle.workloads import validate as validate_workload

SETTINGS = pods.WorkloadSettings()
SHA = "a" * 64


def obj(kind: str, name: str, spec: dict[str, Any], *, uid: str = "uid-1") -> dict[str, Any]:
    return {
        "apiVersion": "modelcycle.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": "ns", "uid": uid, "generation": 3, "resourceVersion": "42"},
        "spec": spec,
        "status": {"phase": "Whatever"},
    }


def dataset(name: str = "iris", **spec: Any) -> dict[str, Any]:
    return obj("Dataset", name, {"source": {"builtin": {"name": "iris"}}, "target": "target", **spec})


def run(name: str = "iris-logreg", **spec: Any) -> dict[str, Any]:
    base = {
        "datasetRef": {"name": "iris"},
        "model": {"name": "iris"},
        "estimator": {"class": "sklearn.linear_model.LogisticRegression", "params": {"C": 1.0}},
        "gates": {"min": {"accuracy": 0.9}},
    }
    return obj("TrainingRun", name, {**base, **spec})


def version(name: str = "iris-v1") -> dict[str, Any]:
    return obj(
        "ModelVersion",
        name,
        {
            "model": "iris",
            "version": 1,
            "artifact": {"uri": "pvc://models/ns/iris/runs/r/model.skops", "sha256": SHA},
            "lineage": {"dataset": "iris", "datasetUri": "pvc://datasets/sha256/x/data.parquet"},
        },
    )


SNAPSHOT = {"uri": "pvc://datasets/sha256/x/data.parquet", "sha256": SHA, "profileUri": "pvc://p.json"}


def training_job(obj: dict[str, Any]) -> dict[str, Any]:
    """The training Job of `obj`, its spec parsed as the controller does."""
    spec = trainingrun.TrainingRunSpec.model_validate(obj["spec"])
    return jobs.training_job(obj, spec=spec, snapshot=SNAPSHOT, settings=SETTINGS)


def all_jobs() -> list[dict[str, Any]]:
    return [
        jobs.data_job(dataset(), settings=SETTINGS),
        training_job(run()),
        jobs.validation_job(version(), settings=SETTINGS, production=(2, {"accuracy": 0.9})),
    ]


# --------------------------------------------------------------------------- names


def test_names_follow_the_design() -> None:
    assert jobs.data_job_name(dataset()) == f"iris-data-{jobs.spec_hash(dataset())}"
    assert jobs.data_job_name(dataset(), epoch=123) == f"iris-data-{jobs.spec_hash(dataset())}-123"
    assert jobs.training_job_name(run()) == "iris-logreg-train"
    assert jobs.validation_job_name(version()) == "iris-v1-validate"


@pytest.mark.parametrize("length", [40, 55, 63, 100, 253])
def test_long_names_are_trimmed_to_63_with_a_hash_and_keep_their_suffix(length: int) -> None:
    long_name = ("a" * (length - 1)) + "z"
    names = [
        jobs.data_job_name(dataset(long_name)),
        jobs.data_job_name(dataset(long_name), epoch=29_000_000),
        jobs.training_job_name(run(long_name)),
        jobs.validation_job_name(version(long_name)),
    ]
    for name in names:
        assert len(name) <= 63
        assert name[0].isalnum() and name[-1].isalnum()
    assert names[2].endswith("-train") and names[3].endswith("-validate")
    if length + len("-train") > 63:
        assert meta.short_hash(f"{long_name}-train") in names[2]
        # Two different long names sharing the first 50 characters still get different Job names.
        other = ("a" * (length - 1)) + "y"
        assert jobs.training_job_name(run(other)) != names[2]


def test_data_job_name_changes_with_the_spec_and_the_epoch_but_not_with_status_or_metadata() -> None:
    base = dataset()
    edited = dataset(validation={"minRows": 100})
    touched = copy.deepcopy(base)
    touched["metadata"]["resourceVersion"] = "99"
    touched["metadata"]["generation"] = 4
    touched["status"] = {"phase": "Other"}
    assert jobs.data_job_name(edited) != jobs.data_job_name(base)
    assert jobs.data_job_name(touched) == jobs.data_job_name(base)
    assert jobs.data_job_name(base, epoch=1) != jobs.data_job_name(base, epoch=2)


def test_the_spec_hash_can_be_read_back_from_a_data_job_name() -> None:
    for ds in (dataset(), dataset("my-data-set"), dataset("x" * 80)):
        digest = jobs.spec_hash(ds)
        assert jobs.data_job_spec_hash(jobs.data_job_name(ds)) == digest
        assert jobs.data_job_spec_hash(jobs.data_job_name(ds, epoch=7)) == digest
    assert jobs.data_job_spec_hash("iris-train") is None


# --------------------------------------------------------------------------- shape


@pytest.mark.parametrize("job", all_jobs(), ids=["data", "train", "validate"])
def test_every_job_is_owned_labelled_and_bounded(job: dict[str, Any]) -> None:
    metadata = job["metadata"]
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    assert metadata["namespace"] == "ns"
    [owner] = metadata["ownerReferences"]
    assert owner["uid"] == "uid-1" and owner["controller"] is True and owner["blockOwnerDeletion"] is True
    assert owner["apiVersion"] == "modelcycle.io/v1alpha1"
    assert metadata["labels"][meta.OWNER] == owner["name"]
    assert metadata["labels"][meta.OWNER_KIND] == owner["kind"]
    assert metadata["labels"][meta.MANAGED_BY] == "modelcycle"
    assert job["spec"]["template"]["metadata"]["labels"][meta.OWNER] == owner["name"]
    assert metadata["annotations"][jobs.SPEC_HASH]
    spec = job["spec"]
    assert spec["activeDeadlineSeconds"] > 0
    assert spec["backoffLimit"] >= 0
    assert "ttlSecondsAfterFinished" not in spec  # the operator reads the result from the pod
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0]["action"] == "FailJob" and rules[0]["onExitCodes"]["values"] == [1, 2]


@pytest.mark.parametrize("job", all_jobs(), ids=["data", "train", "validate"])
def test_every_job_pod_passes_pod_security_restricted(job: dict[str, Any]) -> None:
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "hostNetwork" not in pod and "hostPID" not in pod and "hostIPC" not in pod
    for volume in pod["volumes"]:
        assert set(volume) - {"name"} <= {
            "emptyDir",
            "persistentVolumeClaim",
            "configMap",
            "secret",
            "projected",
        }
    [container] = pod["containers"]
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["runAsNonRoot"] is True
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "privileged" not in context
    assert container["command"] == ["modelcycle"]
    assert container["terminationMessagePath"] == pods.TERMINATION_LOG
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert not container.get("ports")


# --------------------------------------------------------------------------- arguments


def parse(configure: Any, argv: list[str]) -> Any:
    import argparse

    parser = argparse.ArgumentParser()
    configure(parser)
    return parser.parse_args(argv)


def container(job: dict[str, Any]) -> dict[str, Any]:
    return dict(job["spec"]["template"]["spec"]["containers"][0])


def test_data_job_args_are_what_modelcycle_data_accepts() -> None:
    job = jobs.data_job(dataset(), settings=SETTINGS)
    args = container(job)["args"]
    assert args[0] == "data"
    parsed = parse(data_workload.configure, args[1:])
    passed = json.loads(parsed.spec_json)
    assert passed == {
        "apiVersion": "modelcycle.io/v1alpha1",
        "kind": "Dataset",
        "metadata": {"name": "iris", "namespace": "ns"},
        "spec": dataset()["spec"],
    }
    assert parsed.pvc_root == jobs.PVC_SOURCE_ROOT and parsed.config_map_dir == jobs.CONFIG_MAP_SOURCE_ROOT


def test_a_traffic_data_job_gets_the_merged_snapshot_and_a_new_one_is_a_new_job() -> None:
    ds = dataset(source={"traffic": {"deployment": "iris", "mergeWith": {"dataset": "base", "share": 0.3}}})
    first = {"uri": "pvc://datasets/sha256/" + "a" * 64 + "/data.parquet", "sha256": "a" * 64}
    second = {**first, "sha256": "b" * 64}
    job = jobs.data_job(ds, settings=SETTINGS, merge=first)
    parsed = parse(data_workload.configure, container(job)["args"][1:])
    assert (parsed.merge_snapshot_uri, parsed.merge_snapshot_sha256) == (first["uri"], first["sha256"])
    name = job["metadata"]["name"]
    assert jobs.data_job_spec_hash(name) == jobs.data_inputs_hash(ds, first)
    assert jobs.data_job(ds, settings=SETTINGS, merge=second)["metadata"]["name"] != name
    assert jobs.data_job_name(ds) == jobs.data_job(ds, settings=SETTINGS)["metadata"]["name"] != name


def test_training_job_args_carry_the_snapshot_and_its_annotations_record_it() -> None:
    job = training_job(run())
    args = container(job)["args"]
    assert args[0] == "train"
    parsed = parse(train_workload.configure, args[1:])
    assert json.loads(parsed.spec_json)["spec"] == run()["spec"]
    assert (parsed.dataset_uri, parsed.dataset_sha256, parsed.profile_uri) == (
        SNAPSHOT["uri"],
        SNAPSHOT["sha256"],
        SNAPSHOT["profileUri"],
    )
    annotations = job["metadata"]["annotations"]
    assert annotations[jobs.DATASET_URI] == SNAPSHOT["uri"]
    assert annotations[jobs.DATASET_SHA256] == SHA
    assert annotations[jobs.PROFILE_URI] == SNAPSHOT["profileUri"]


def test_a_recreated_run_of_the_same_name_trains_into_its_own_directory() -> None:
    def run_dir_name(uid: str) -> str:
        recreated = run()
        recreated["metadata"]["uid"] = uid
        job = training_job(recreated)
        return str(parse(train_workload.configure, container(job)["args"][1:]).name)

    assert run_dir_name("aaaaaaaa-1111") != run_dir_name("bbbbbbbb-2222")
    assert run_dir_name("aaaaaaaa-1111") == run_dir_name("aaaaaaaa-1111")


def test_training_job_takes_image_resources_retries_and_deadline_from_the_run() -> None:
    resources = {"requests": {"cpu": "2"}, "limits": {"memory": "4Gi"}}
    job = training_job(
        run(image="example.com/train:1", resources=resources, backoffLimit=4, activeDeadlineSeconds=600)
    )
    assert container(job)["image"] == "example.com/train:1"
    assert container(job)["resources"] == resources
    assert job["spec"]["backoffLimit"] == 4
    assert job["spec"]["activeDeadlineSeconds"] == 600
    default = training_job(run())
    assert container(default)["image"] == SETTINGS.image
    assert default["spec"]["backoffLimit"] == 1 and default["spec"]["activeDeadlineSeconds"] == 3600


def test_validation_job_passes_production_metrics_and_completed_lineage() -> None:
    lineage = {"dataset": "iris", "datasetUri": "pvc://d", "datasetSha256": SHA}
    job = jobs.validation_job(
        version(), settings=SETTINGS, lineage=lineage, production=(2, {"accuracy": 0.91})
    )
    args = container(job)["args"]
    assert args[0] == "validate"
    parsed = parse(validate_workload.configure, args[1:])
    assert json.loads(parsed.spec_json)["spec"]["lineage"] == lineage
    assert parsed.production_version == 2
    assert json.loads(parsed.production_metrics) == {"accuracy": 0.91}
    assert job["metadata"]["annotations"][jobs.PRODUCTION_VERSION] == "2"
    plain = jobs.validation_job(version(), settings=SETTINGS)
    assert "--production-version" not in container(plain)["args"]
    assert (
        json.loads(parse(validate_workload.configure, container(plain)["args"][1:]).spec_json)["spec"]
        == (version()["spec"])
    )


def test_validation_job_passes_the_champion_artifact_for_a_comparison_on_the_same_rows() -> None:
    champion = {"uri": "pvc://models/ml/iris/v2/model.skops", "sha256": SHA}
    job = jobs.validation_job(
        version(), settings=SETTINGS, production=(2, {"accuracy": 0.9}), champion=champion
    )
    parsed = parse(validate_workload.configure, container(job)["args"][1:])
    assert (parsed.production_artifact_uri, parsed.production_artifact_sha256) == (champion["uri"], SHA)
    without_production = jobs.validation_job(version(), settings=SETTINGS, champion=champion)
    assert "--production-artifact-uri" not in container(without_production)["args"]


def test_builders_are_deterministic_and_do_not_modify_their_input() -> None:
    inputs = [dataset(), run(), version()]
    before = copy.deepcopy(inputs)
    first = all_jobs()
    second = all_jobs()
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
    assert [dataset(), run(), version()] == before
    # Key order in the user's spec does not matter either.
    reordered = dataset()
    reordered["spec"] = dict(reversed(list(reordered["spec"].items())))
    assert jobs.data_job(reordered, settings=SETTINGS) == jobs.data_job(dataset(), settings=SETTINGS)


# --------------------------------------------------------------------------- data sources


def test_pvc_source_is_mounted_read_only_where_the_workload_looks() -> None:
    ds = dataset(source={"pvc": {"claimName": "raw", "path": "iris.csv"}})
    pod = jobs.data_job(ds, settings=SETTINGS)["spec"]["template"]["spec"]
    assert {"name": "source", "persistentVolumeClaim": {"claimName": "raw", "readOnly": True}} in pod[
        "volumes"
    ]
    mounts = pod["containers"][0]["volumeMounts"]
    assert {"name": "source", "mountPath": "/data/raw", "readOnly": True} in mounts


def test_config_map_source_is_mounted_read_only_where_the_workload_looks() -> None:
    ds = dataset(source={"configMap": {"name": "cm", "key": "data.csv"}})
    pod = jobs.data_job(ds, settings=SETTINGS)["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "source")
    assert volume["configMap"] == {"name": "cm", "items": [{"key": "data.csv", "path": "data.csv"}]}
    assert {"name": "source", "mountPath": "/config/cm", "readOnly": True} in pod["containers"][0][
        "volumeMounts"
    ]


def test_s3_source_credentials_come_from_its_secret_and_replace_the_stores() -> None:
    ds = dataset(source={"s3": {"uri": "s3://bucket/iris.csv", "secretRef": {"name": "creds"}}})
    settings = pods.WorkloadSettings(s3_uri="s3://store/prefix", s3_secret="store-creds")
    env = jobs.data_job(ds, settings=settings)["spec"]["template"]["spec"]["containers"][0]["env"]
    secrets = {
        e["name"]: e["valueFrom"]["secretKeyRef"]["name"]
        for e in env
        if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]
    }
    assert secrets == {"AWS_ACCESS_KEY_ID": "creds", "AWS_SECRET_ACCESS_KEY": "creds"}
    names = [e["name"] for e in env]
    assert len(names) == len(set(names))


# --------------------------------------------------------------------------- the ModelVersion record

RESULT = {
    "ok": True,
    "artifact": {
        "uri": "pvc://models/ns/iris/runs/iris-logreg/model.skops",
        "sha256": SHA,
        "format": "skops",
    },
    "metrics": {"accuracy": 0.95, "log_loss": None},
    "params": {"C": 1.0},
    "datasetSha256": SHA,
    "split": {"testFraction": 0.2, "seed": 42, "stratify": True},
    "profileUri": "pvc://p.json",
}


def test_model_version_record_has_lineage_labels_and_no_owner() -> None:
    record = modelversions.model_version(
        run(), version=3, result=RESULT, inputs={"datasetUri": "pvc://d", "datasetSha256": SHA}, image="img:1"
    )
    metadata = record["metadata"]
    assert metadata["name"] == "iris-v3"
    assert "ownerReferences" not in metadata
    assert meta.OWNER not in metadata["labels"]
    assert metadata["labels"][meta.MODEL] == "iris"
    assert metadata["labels"][meta.VERSION] == "3"
    assert metadata["labels"][modelversions.TRAINING_RUN] == "iris-logreg"
    assert metadata["labels"][modelversions.TRAINING_RUN_UID] == "uid-1"
    spec = record["spec"]
    assert spec["model"] == "iris" and spec["version"] == 3
    assert spec["artifact"] == RESULT["artifact"]
    assert spec["metrics"] == {"accuracy": 0.95}  # a NaN metric (null) is left out
    assert spec["gates"] == {"min": {"accuracy": 0.9}}
    assert spec["lineage"] == {
        "trainingRun": "iris-logreg",
        "dataset": "iris",
        "datasetSha256": SHA,
        "datasetUri": "pvc://d",
        "profileUri": "pvc://p.json",
        "split": RESULT["split"],
        "params": {"C": 1.0},
        "image": "img:1",
    }


def test_model_version_record_validates_against_the_api_model() -> None:
    from modelcycle.api.modelversion import ModelVersionSpec

    record = modelversions.model_version(
        run(), version=1, result=RESULT, inputs={"datasetUri": "pvc://d"}, image="i"
    )
    ModelVersionSpec.model_validate(record["spec"])


def test_a_version_trained_on_traffic_names_the_base_snapshot_in_its_lineage() -> None:
    from modelcycle.api.modelversion import ModelVersionSpec
    from modelcycle.builders import retraining

    on_traffic = run()
    on_traffic["metadata"]["annotations"] = {
        retraining.BASE_DATASET: "iris-base",
        retraining.BASE_SNAPSHOT: "c" * 64,
        retraining.TRAFFIC_SNAPSHOT: SHA,
    }
    record = modelversions.model_version(
        on_traffic,
        version=2,
        result=RESULT,
        inputs={"datasetUri": "pvc://d", "datasetSha256": SHA},
        image="i",
    )
    lineage = record["spec"]["lineage"]
    assert (lineage["datasetSha256"], lineage["baseDataset"], lineage["baseDatasetSha256"]) == (
        SHA,
        "iris-base",
        "c" * 64,
    )
    ModelVersionSpec.model_validate(record["spec"])


def test_next_version_counts_every_version_of_the_model_whatever_its_name() -> None:
    versions = [
        {"spec": {"model": "iris", "version": 1}},
        {"spec": {"model": "iris", "version": 7}},  # registered by hand under another name
        {"spec": {"model": "wine", "version": 9}},
    ]
    assert modelversions.next_version(versions, "iris") == 8
    assert modelversions.next_version(versions, "digits") == 1
    assert modelversions.version_name("a" * 40, 123456) == "a" * 40 + "-v123456"
