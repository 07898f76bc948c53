"""Serving manifests: names, selectors, the restricted pod, probes, rollout settings, Service, HPA."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from modelcycle.api import modeldeployment, modelversion
from modelcycle.builders import meta, pods, serving

SHA = "ab" * 32
SETTINGS = pods.WorkloadSettings(image="example.org/modelcycle:test")


def mdep(name: str = "iris", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "modelcycle.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": "ml", "uid": "uid-1", "generation": 1},
        "spec": {"model": "iris", **spec},
    }


def mv(version: int = 3, *, profile: str | None = "pvc://datasets/ml/iris/profile.json") -> dict[str, Any]:
    lineage = {"trainingRun": "iris-run"}
    if profile:
        lineage["profileUri"] = profile
    return {
        "apiVersion": "modelcycle.io/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {"name": f"iris-v{version}", "namespace": "ml"},
        "spec": {
            "model": "iris",
            "version": version,
            "artifact": {"uri": f"pvc://models/ml/iris/v{version}/model.skops", "sha256": SHA},
            "lineage": lineage,
        },
    }


def deployment(track: str = serving.STABLE, replicas: int = 2, **spec: Any) -> dict[str, Any]:
    obj = mdep(**spec)
    return serving.deployment(
        obj, serving.parse_spec(obj), mv(), track=track, replicas=replicas, settings=SETTINGS
    )


def parsed(**spec: Any) -> modeldeployment.ModelDeploymentSpec:
    return serving.parse_spec(mdep(**spec))


def service_of(obj: dict[str, Any]) -> dict[str, Any]:
    return serving.service(obj, serving.parse_spec(obj))


def hpa(obj: dict[str, Any]) -> dict[str, Any] | None:
    return serving.horizontal_pod_autoscaler(obj, serving.parse_spec(obj))


def container(manifest: dict[str, Any]) -> dict[str, Any]:
    containers = manifest["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def test_names_are_stable_and_canary_is_a_second_deployment() -> None:
    assert deployment()["metadata"]["name"] == "iris"
    assert deployment(serving.CANARY)["metadata"]["name"] == "iris-canary"
    assert service_of(mdep())["metadata"]["name"] == "iris"
    assert hpa(mdep(autoscaling={"maxReplicas": 3}))["metadata"]["name"] == "iris"


@pytest.mark.parametrize("name", ["a" * 80, "1st.model", "x.y.z"])
def test_names_are_dns_labels_even_for_long_or_dotted_parents(name: str) -> None:
    for manifest in (
        deployment_of(name, serving.STABLE),
        deployment_of(name, serving.CANARY),
        service_of(mdep(name)),
    ):
        value = manifest["metadata"]["name"]
        assert len(value) <= 63
        assert value[0].isalpha() and value[-1].isalnum()
        assert all(c.isalnum() or c == "-" for c in value)
    assert serving.deployment_name(mdep(name), serving.STABLE) == serving.deployment_name(
        mdep(name), serving.STABLE
    )
    assert serving.deployment_name(mdep(name), serving.STABLE) != serving.deployment_name(
        mdep(name), serving.CANARY
    )


def deployment_of(name: str, track: str) -> dict[str, Any]:
    obj = mdep(name)
    return serving.deployment(obj, serving.parse_spec(obj), mv(), track=track, replicas=1, settings=SETTINGS)


def test_deployment_is_owned_and_labelled() -> None:
    manifest = deployment()
    metadata = manifest["metadata"]
    assert metadata["namespace"] == "ml"
    assert metadata["ownerReferences"] == [
        {
            "apiVersion": "modelcycle.io/v1alpha1",
            "kind": "ModelDeployment",
            "name": "iris",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert metadata["labels"][meta.OWNER] == "iris"
    assert metadata["labels"][meta.OWNER_KIND] == "ModelDeployment"
    labels = manifest["spec"]["template"]["metadata"]["labels"]
    assert labels[meta.MODEL] == "iris"
    assert labels[meta.VERSION] == "3"
    assert labels[serving.TRACK] == serving.STABLE


def test_selectors_never_hold_the_version_and_the_service_spans_tracks() -> None:
    stable, canary = deployment(), deployment(serving.CANARY)
    service = service_of(mdep())
    for manifest in (stable, canary):
        selector = manifest["spec"]["selector"]["matchLabels"]
        assert meta.VERSION not in selector
        template_labels = manifest["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= template_labels.items()
        assert service["spec"]["selector"].items() <= template_labels.items()
    assert stable["spec"]["selector"] != canary["spec"]["selector"]
    assert serving.TRACK not in service["spec"]["selector"]
    assert meta.VERSION not in service["spec"]["selector"]


def test_rolling_update_settings() -> None:
    spec = deployment(progressDeadlineSeconds=45)["spec"]
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    assert spec["progressDeadlineSeconds"] == 45
    assert spec["replicas"] == 2
    assert deployment()["spec"]["progressDeadlineSeconds"] == 300


def test_pod_is_restricted_and_has_no_token() -> None:
    pod = deployment()["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["restartPolicy"] == "Always"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(deployment())["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["readOnlyRootFilesystem"] is True


def test_probes_ports_and_scrape_annotations() -> None:
    c = container(deployment())
    assert c["ports"] == [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
        {"name": "grpc", "containerPort": 8081, "protocol": "TCP"},
    ]
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    annotations = deployment()["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "8080"
    assert annotations["prometheus.io/path"] == "/metrics"


def test_args_carry_artifact_identity_batching_and_profile() -> None:
    c = container(deployment(batching={"maxBatchSize": 16, "maxDelayMicroseconds": 500}))
    assert c["command"] == ["modelcycle"]
    args = c["args"]
    assert args[0] == "serve"

    def flag(name: str) -> str:
        return str(args[args.index(name) + 1])

    assert flag("--artifact-uri") == "pvc://models/ml/iris/v3/model.skops"
    assert flag("--sha256") == SHA
    assert flag("--model-name") == "iris"
    assert flag("--model-version") == "3"
    assert flag("--port") == "8080"
    assert flag("--grpc-port") == "8081"
    assert flag("--max-batch-size") == "16"
    assert flag("--max-delay-us") == "500"
    assert flag("--reference-profile") == "pvc://datasets/ml/iris/profile.json"
    no_profile = serving.serve_args(
        serving.parse_spec(mdep()),
        modelversion.ModelVersionSpec.model_validate(mv(profile=None)["spec"]),
        namespace="ml",
        deployment="iris",
    )
    assert "--reference-profile" not in no_profile


def test_args_parse_with_the_real_serve_command() -> None:
    import argparse

    from modelcycle.workloads import serve

    parser = argparse.ArgumentParser()
    serve.configure(parser)
    parsed = parser.parse_args(container(deployment())["args"][1:])
    assert parsed.artifact_uri == "pvc://models/ml/iris/v3/model.skops"
    assert parsed.sha256 == SHA
    assert parsed.port == 8080
    assert parsed.grpc_port == serving.GRPC_PORT == serve.GRPC_PORT
    assert parsed.max_delay_us == 2000


@pytest.mark.parametrize(
    ("logging", "expected"),
    [
        (None, None),
        ({"sampleRate": 0}, None),
        ({}, {"sample": 1.0, "flush": 10.0, "segment": 10_000, "buffer": 100_000}),
        (
            {"sampleRate": 0.25, "flushIntervalSeconds": 30, "maxSegmentRows": 500, "maxBufferRows": 2000},
            {"sample": 0.25, "flush": 30.0, "segment": 500, "buffer": 2000},
        ),
    ],
    ids=["unset", "rate-zero", "defaults", "all-set"],
)
def test_logging_settings_become_serve_flags_filed_under_namespace_and_deployment(
    logging: dict[str, Any] | None, expected: dict[str, Any] | None
) -> None:
    import argparse

    from modelcycle.workloads import serve

    spec = {} if logging is None else {"logging": logging}
    args = serving.serve_args(
        serving.parse_spec(mdep("iris-prod", **spec)),
        modelversion.ModelVersionSpec.model_validate(mv()["spec"]),
        namespace="ml",
        deployment="iris-prod",
    )
    parser = argparse.ArgumentParser()
    serve.configure(parser)
    parsed = parser.parse_args(args[1:])
    if expected is None:
        assert not any(a.startswith("--log-") for a in args)
        assert parsed.log_sample_rate == 0
        return
    assert (parsed.log_namespace, parsed.log_deployment) == ("ml", "iris-prod")
    assert {
        "sample": parsed.log_sample_rate,
        "flush": parsed.log_flush_seconds,
        "segment": parsed.log_segment_rows,
        "buffer": parsed.log_buffer_rows,
    } == expected


def test_the_serving_pod_mounts_the_artifact_store_writable_for_the_logs() -> None:
    pod = deployment(logging={})["spec"]["template"]["spec"]
    [volume] = [v for v in pod["volumes"] if v["name"] == "artifacts"]
    assert volume["persistentVolumeClaim"] == {"claimName": SETTINGS.artifact_claim}
    [mount] = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "artifacts"]
    assert mount["mountPath"] == pods.ARTIFACTS_MOUNT and not mount.get("readOnly")


def test_resources_and_image_from_spec_else_settings() -> None:
    c = container(deployment(image="example.org/custom:1", resources={"limits": {"memory": "1Gi"}}))
    assert c["image"] == "example.org/custom:1"
    assert c["resources"] == {"limits": {"memory": "1Gi"}}
    default = container(deployment())
    assert default["image"] == SETTINGS.image
    assert default["resources"] == SETTINGS.default_resources


def test_spec_hash_tracks_the_template_but_not_the_size() -> None:
    base = deployment(replicas=2)["metadata"]["annotations"][serving.SPEC_HASH]
    assert deployment(replicas=5)["metadata"]["annotations"][serving.SPEC_HASH] == base
    other = serving.deployment(
        mdep(), serving.parse_spec(mdep()), mv(4), track=serving.STABLE, replicas=2, settings=SETTINGS
    )
    assert other["metadata"]["annotations"][serving.SPEC_HASH] != base
    assert other["spec"]["template"]["metadata"]["labels"][meta.VERSION] == "4"
    assert deployment(progressDeadlineSeconds=60)["metadata"]["annotations"][serving.SPEC_HASH] != base


def test_builders_do_not_mutate_their_input() -> None:
    obj, version = mdep(replicas=2), mv()
    before = copy.deepcopy((obj, version))
    serving.deployment(
        obj, serving.parse_spec(obj), version, track=serving.STABLE, replicas=2, settings=SETTINGS
    )
    service_of(obj)
    assert (obj, version) == before


def test_service_shape() -> None:
    service = service_of(mdep())
    assert service["apiVersion"] == "v1"
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
        {"name": "grpc", "port": 8081, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "grpc"},
    ]
    assert service["metadata"]["ownerReferences"][0]["uid"] == "uid-1"


def test_hpa_shape_and_absence() -> None:
    assert hpa(mdep()) is None
    hpa_manifest = hpa(mdep(autoscaling={"minReplicas": 2, "maxReplicas": 6, "targetCpu": 55}))
    assert hpa_manifest is not None
    assert hpa_manifest["apiVersion"] == "autoscaling/v2"
    spec = hpa_manifest["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "iris"}
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 6)
    assert spec["metrics"][0]["resource"] == {
        "name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": 55},
    }


@pytest.mark.parametrize(
    ("replicas", "weight", "stable", "canary", "share"),
    [
        (10, 10, 9, 1, 10),
        (20, 5, 19, 1, 5),
        (5, 40, 3, 2, 40),
        (4, 50, 2, 2, 50),
        (10, 25, 8, 2, 20),  # 20% and 30% are as close: the smaller canary
        (3, 10, 2, 1, 33),  # the least a canary can have of 3 pods
        (3, 50, 2, 1, 33),
        (7, 99, 1, 6, 86),  # the stable keeps one pod
        (1, 99, 1, 1, 50),  # one replica cannot be split: one canary pod beside it
        (0, 50, 0, 0, 0),
    ],
)
def test_canary_split_is_as_close_to_the_weight_as_the_replicas_allow(
    replicas: int, weight: int, stable: int, canary: int, share: int
) -> None:
    assert serving.canary_split(replicas, weight) == (stable, canary)
    assert serving.canary_share(stable, canary) == share


@pytest.mark.parametrize(
    ("stable", "weight", "canary", "share"),
    [(9, 10, 1, 10), (3, 50, 3, 50), (2, 10, 1, 33), (6, 25, 2, 25), (0, 10, 0, 0)],
)
def test_canary_beside_an_autoscaled_stable(stable: int, weight: int, canary: int, share: int) -> None:
    assert serving.canary_beside(stable, weight) == canary
    assert serving.canary_share(stable, canary) == share


def test_stable_replicas_with_and_without_autoscaling() -> None:
    assert serving.stable_replicas(serving.parse_spec(mdep(replicas=3)), current=7) == 3
    scaled = parsed(replicas=3, autoscaling={"minReplicas": 2, "maxReplicas": 5})
    assert serving.stable_replicas(scaled, current=None) == 2
    assert serving.stable_replicas(scaled, current=4) == 4
    assert serving.stable_replicas(scaled, current=9) == 5


def test_url_and_pod_selector() -> None:
    assert (
        serving.url(mdep(), serving.parse_spec(mdep())) == "http://iris.ml.svc.cluster.local/v2/models/iris"
    )
    selector = serving.pod_selector(mdep(), version=3)
    assert f"{meta.VERSION}=3" in selector.split(",")
    assert f"{meta.OWNER}=iris" in selector.split(",")


def test_server_drains_before_closing_within_the_grace_period() -> None:
    pod = deployment()["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    drain = float(args[args.index("--drain-delay") + 1])
    in_flight = float(args[args.index("--shutdown-timeout") + 1])
    assert drain > 0
    assert drain + in_flight < pod["terminationGracePeriodSeconds"]
