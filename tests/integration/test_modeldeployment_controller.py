"""ModelDeployment against a real control plane and the real operator process.

There is no node: serving pods stay Pending unless a test reports them Ready through pods/status
(support.serving.PodReadiness), the way the kubelet would; the ReplicaSet and Deployment
controllers then do the rest (availability, rolling updates, ProgressDeadlineExceeded).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from modelcycle.builders import meta, serving
from modelcycle.controllers import kube
from support.cluster import condition, wait_for
from support.serving import PodReadiness, create_version, validate_version

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def client(api_client: Any) -> kube.Client:
    return kube.Client(api_client.configuration)


def mdep_manifest(name: str = "iris", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "modelcycle.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {"model": "iris", **spec},
    }


def create_mdep(client: kube.Client, namespace: str, name: str = "iris", **spec: Any) -> dict[str, Any]:
    manifest = mdep_manifest(name, **spec)
    manifest["metadata"]["namespace"] = namespace
    return client.create(manifest)


def get(client: kube.Client, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    return client.get_or_none(kind=kind, namespace=namespace, name=name)


def status_of(client: kube.Client, namespace: str, name: str = "iris") -> dict[str, Any]:
    return dict((get(client, "ModelDeployment", namespace, name) or {}).get("status") or {})


def ready_with(client: kube.Client, namespace: str, **expected: Any) -> bool:
    """ModelDeployment iris is Ready and its status holds every `expected` value (one GET)."""
    mdep = get(client, "ModelDeployment", namespace, "iris") or {}
    status = mdep.get("status") or {}
    return condition(mdep, "Ready").get("status") == "True" and all(
        status.get(key) == value for key, value in expected.items()
    )


def template_version(deployment: dict[str, Any] | None) -> str | None:
    if deployment is None:
        return None
    return str(deployment["spec"]["template"]["metadata"]["labels"].get(meta.VERSION))


def events_of(client: kube.Client, namespace: str, name: str = "iris") -> list[tuple[str, str, str]]:
    return [
        (e["type"], e["reason"], e["message"])
        for e in client.list(kind="Event", namespace=namespace)
        if e["involvedObject"].get("kind") == "ModelDeployment" and e["involvedObject"].get("name") == name
    ]


def wait_condition(
    client: kube.Client, namespace: str, type_: str, status: str, *, reason: str | None = None,
    name: str = "iris", timeout: float = 90,
) -> dict[str, Any]:  # fmt: skip
    def check() -> dict[str, Any] | None:
        found = condition(get(client, "ModelDeployment", namespace, name), type_)
        if found.get("status") == status and (reason is None or found.get("reason") == reason):
            return found
        return None

    return dict(wait_for(check, timeout=timeout, what=f"{name} {type_}={status} {reason or ''}"))


def wait_validated(client: kube.Client, namespace: str, name: str, status: str, *, what: str) -> None:
    """Until the ModelVersion's Validated condition has this status (Unknown while it validates)."""
    wait_for(
        lambda: condition(get(client, "ModelVersion", namespace, name), "Validated").get("status") == status,
        timeout=60,
        what=what,
    )


def validated_versions(client: kube.Client, kubelet: Any, namespace: str, *versions: int) -> None:
    for version in versions:
        create_version(client, namespace, model="iris", version=version)
        validate_version(kubelet, namespace, f"iris-v{version}")
    for version in versions:
        wait_validated(client, namespace, f"iris-v{version}", "True", what=f"iris-v{version} Validated")


# --------------------------------------------------------------------------- create, shape, Ready


def test_create_builds_deployment_service_and_hpa_and_becomes_ready(
    client: kube.Client, namespace: str, operator: Any, kubelet: Any, kubectl: Path, kubeconfig: Path
) -> None:
    validated_versions(client, kubelet, namespace, 1)
    owner = create_mdep(
        client,
        namespace,
        replicas=2,
        autoscaling={"minReplicas": 2, "maxReplicas": 4, "targetCpu": 60},
        batching={"maxBatchSize": 32, "maxDelayMicroseconds": 1000},
        progressDeadlineSeconds=120,
    )
    deployment = wait_for(
        lambda: get(client, "Deployment", namespace, "iris"), timeout=60, what="the Deployment"
    )
    service = wait_for(lambda: get(client, "Service", namespace, "iris"), timeout=60, what="the Service")
    hpa = wait_for(
        lambda: get(client, "HorizontalPodAutoscaler", namespace, "iris"), timeout=60, what="the HPA"
    )

    for child in (deployment, service, hpa):
        refs = child["metadata"]["ownerReferences"]
        assert [(r["kind"], r["uid"], r["controller"]) for r in refs] == [
            ("ModelDeployment", owner["metadata"]["uid"], True)
        ]
        assert child["metadata"]["labels"][meta.OWNER] == "iris"

    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert spec["progressDeadlineSeconds"] == 120
    template = spec["template"]
    assert template["metadata"]["labels"][meta.MODEL] == "iris"
    assert template["metadata"]["labels"][meta.VERSION] == "1"
    assert template["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    pod = template["spec"]
    assert pod["automountServiceAccountToken"] is False
    container = pod["containers"][0]
    assert container["args"][:1] == ["serve"]
    assert container["args"][container["args"].index("--max-batch-size") + 1] == "32"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["securityContext"]["allowPrivilegeEscalation"] is False

    assert service["spec"]["ports"][0]["port"] == 80
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert meta.VERSION not in service["spec"]["selector"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "iris"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 4)

    # Not Ready while no pod is ready; kubectl wait ends once the kubelet reports the pods ready.
    assert condition(get(client, "ModelDeployment", namespace, "iris"), "Ready").get("status") != "True"
    with PodReadiness(client, namespace, selector=serving.pod_selector(owner)):
        done = subprocess.run(
            [str(kubectl), "--kubeconfig", str(kubeconfig), "-n", namespace, "wait",
             "--for=condition=Ready", "modeldeployment/iris", "--timeout=90s"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    status = status_of(client, namespace)
    assert status["servedVersion"] == 1
    assert status["modelVersion"] == "iris-v1"
    assert status["readyReplicas"] == 2
    assert status["url"] == f"http://iris.{namespace}.svc.cluster.local/v2/models/iris"
    assert status["observedGeneration"] == owner["metadata"]["generation"]
    assert condition(get(client, "ModelDeployment", namespace, "iris"), "Available")["status"] == "True"
    assert [(h["version"], h["outcome"]) for h in status["history"]] == [(1, "Serving")]


# --------------------------------------------------------------------------- spec edits


def test_spec_edits_converge_and_observed_generation_follows(
    client: kube.Client, namespace: str, operator: Any, kubelet: Any
) -> None:
    validated_versions(client, kubelet, namespace, 1, 2)
    owner = create_mdep(client, namespace, replicas=1, version=1)
    with PodReadiness(client, namespace, selector=serving.pod_selector(owner)):
        wait_condition(client, namespace, "Ready", "True")

        # Scale: the Deployment follows, no rollout.
        client.patch(
            kind="ModelDeployment", namespace=namespace, name="iris", patch={"spec": {"replicas": 3}}
        )
        wait_for(
            lambda: (get(client, "Deployment", namespace, "iris") or {}).get("spec", {}).get("replicas") == 3,
            timeout=60,
            what="Deployment scaled to 3",
        )
        wait_for(
            lambda: ready_with(client, namespace, observedGeneration=2, readyReplicas=3),
            timeout=90,
            what="Ready at generation 2 with 3 replicas",
        )

        # Pin another version: a rolling update of the same Deployment's pod template.
        client.patch(kind="ModelDeployment", namespace=namespace, name="iris", patch={"spec": {"version": 2}})
        wait_for(
            lambda: template_version(get(client, "Deployment", namespace, "iris")) == "2",
            timeout=60,
            what="template at version 2",
        )
        wait_for(
            lambda: ready_with(client, namespace, observedGeneration=3, servedVersion=2),
            timeout=120,
            what="version 2 served and Ready at generation 3",
        )
        history = [(h["version"], h["outcome"]) for h in status_of(client, namespace)["history"]]
        assert history == [(1, "Superseded"), (2, "Serving")]
        assert any(reason == "RolloutStarted" for _, reason, _ in events_of(client, namespace))

        # Autoscaling on: an HPA appears; off again: it goes, and the Deployment keeps its size.
        client.patch(
            kind="ModelDeployment",
            namespace=namespace,
            name="iris",
            patch={"spec": {"autoscaling": {"maxReplicas": 5}}},
        )
        wait_for(
            lambda: get(client, "HorizontalPodAutoscaler", namespace, "iris"), timeout=60, what="HPA created"
        )
        client.patch(
            kind="ModelDeployment", namespace=namespace, name="iris", patch={"spec": {"autoscaling": None}}
        )
        wait_for(
            lambda: get(client, "HorizontalPodAutoscaler", namespace, "iris") is None,
            timeout=60,
            what="HPA removed",
        )
        wait_for(
            lambda: ready_with(client, namespace, observedGeneration=5),
            timeout=90,
            what="Ready at generation 5",
        )
        assert get(client, "Deployment", namespace, "iris")["spec"]["replicas"] == 3  # type: ignore[index]


# --------------------------------------------------------------------------- garbage collection


def test_delete_garbage_collects_the_children(
    client: kube.Client, namespace: str, operator: Any, kubelet: Any
) -> None:
    validated_versions(client, kubelet, namespace, 1)
    create_mdep(client, namespace, replicas=1, autoscaling={"maxReplicas": 2})
    for kind in ("Deployment", "Service", "HorizontalPodAutoscaler"):
        wait_for(lambda k=kind: get(client, k, namespace, "iris"), timeout=60, what=kind)
    client.delete(kind="ModelDeployment", namespace=namespace, name="iris")
    for kind in ("Deployment", "Service", "HorizontalPodAutoscaler"):
        wait_for(
            lambda k=kind: get(client, k, namespace, "iris") is None, timeout=90, what=f"{kind} collected"
        )
    # The records stay: deleting a deployment never deletes a registered version.
    assert get(client, "ModelVersion", namespace, "iris-v1") is not None


# --------------------------------------------------------------------------- latest follows validation


def test_latest_rolls_out_each_newly_validated_version(
    client: kube.Client, namespace: str, operator: Any, kubelet: Any
) -> None:
    validated_versions(client, kubelet, namespace, 1)
    owner = create_mdep(client, namespace, replicas=2)
    with PodReadiness(client, namespace, selector=serving.pod_selector(owner)):
        wait_condition(client, namespace, "Ready", "True")
        # A new version that is still validating is not served; once Validated it is rolled out.
        create_version(client, namespace, model="iris", version=2)
        wait_validated(client, namespace, "iris-v2", "Unknown", what="iris-v2 validating")
        assert template_version(get(client, "Deployment", namespace, "iris")) == "1"
        validate_version(kubelet, namespace, "iris-v2")
        wait_for(
            lambda: ready_with(client, namespace, servedVersion=2),
            timeout=120,
            what="version 2 served",
        )
        # A rejected newer version is never served.
        create_version(client, namespace, model="iris", version=3)
        validate_version(kubelet, namespace, "iris-v3", validated=False)
        wait_validated(client, namespace, "iris-v3", "False", what="iris-v3 rejected")
        assert template_version(get(client, "Deployment", namespace, "iris")) == "2"
        assert status_of(client, namespace)["servedVersion"] == 2


# --------------------------------------------------------------------------- canary


def test_canary_runs_beside_the_stable_version_and_is_promoted(
    client: kube.Client, namespace: str, operator: Any, kubelet: Any
) -> None:
    validated_versions(client, kubelet, namespace, 1)
    owner = create_mdep(
        client,
        namespace,
        replicas=3,
        strategy={"type": "Canary", "canary": {"weight": 50, "promoteAfterSeconds": 5}},
    )
    seen_canary: list[dict[str, Any]] = []
    with PodReadiness(client, namespace, selector=serving.pod_selector(owner)):
        wait_condition(client, namespace, "Ready", "True")
        validated_versions(client, kubelet, namespace, 2)

        def canary_seen() -> bool:
            canary = get(client, "Deployment", namespace, "iris-canary")
            if canary is not None:
                seen_canary.append(canary)
            return canary is not None

        wait_for(canary_seen, timeout=60, what="the canary Deployment")
        canary = seen_canary[-1]
        # 3 replicas at weight 50: 1 of 3 pods (33%) and 2 of 3 (67%) are as close; the smaller canary.
        assert canary["spec"]["replicas"] == 1
        assert template_version(canary) == "2"
        stable = get(client, "Deployment", namespace, "iris")
        assert template_version(stable) == "1"
        assert stable["spec"]["replicas"] == 2  # type: ignore[index]
        # Both tracks are behind the one Service.
        service = get(client, "Service", namespace, "iris")
        assert service is not None
        for deployment in (canary, get(client, "Deployment", namespace, "iris")):
            labels = deployment["spec"]["template"]["metadata"]["labels"]  # type: ignore[index]
            assert service["spec"]["selector"].items() <= labels.items()
        wait_for(
            lambda: status_of(client, namespace).get("canaryVersion") == 2,
            timeout=30,
            what="status.canaryVersion",
        )
        assert status_of(client, namespace)["canaryShare"] == 33
        assert condition(get(client, "ModelDeployment", namespace, "iris"), "Ready")["status"] == "False"

        # Healthy for promoteAfterSeconds: the stable template takes version 2, the canary goes.
        wait_for(
            lambda: (
                ready_with(client, namespace, servedVersion=2)
                and get(client, "Deployment", namespace, "iris-canary") is None
            ),
            timeout=120,
            what="the canary promoted and removed",
        )
    promoted = get(client, "Deployment", namespace, "iris")
    assert template_version(promoted) == "2"
    assert promoted["spec"]["replicas"] == 3  # type: ignore[index]
    status = status_of(client, namespace)
    assert "canaryVersion" not in status and "canaryShare" not in status
    assert [(h["version"], h["outcome"]) for h in status["history"]] == [(1, "Superseded"), (2, "Serving")]
    reasons = [reason for _, reason, _ in events_of(client, namespace)]
    assert "CanaryStarted" in reasons and "Promoting" in reasons


# --------------------------------------------------------------------------- failed rollouts


@pytest.mark.parametrize("strategy", ["Rolling", "Canary"])
def test_a_version_whose_pods_never_become_ready_is_rolled_back(
    client: kube.Client, namespace: str, operator: Any, kubelet: Any, strategy: str
) -> None:
    validated_versions(client, kubelet, namespace, 1)
    spec: dict[str, Any] = {"replicas": 2, "progressDeadlineSeconds": 10}
    if strategy == "Canary":
        spec["strategy"] = {"type": "Canary", "canary": {"weight": 50, "promoteAfterSeconds": 1}}
    owner = create_mdep(client, namespace, **spec)

    def broken(pod: dict[str, Any]) -> bool:  # version 2 "crashes": its pods never pass readiness
        return bool(pod["metadata"]["labels"].get(meta.VERSION) == "2")

    with PodReadiness(client, namespace, selector=serving.pod_selector(owner), hold=broken):
        wait_condition(client, namespace, "Ready", "True")
        validated_versions(client, kubelet, namespace, 2)
        degraded = wait_condition(
            client, namespace, "Degraded", "True", reason="ProgressDeadlineExceeded", timeout=120
        )
        assert "rolled back to version 1" in degraded["message"]
        stalled = condition(get(client, "ModelDeployment", namespace, "iris"), "Stalled")
        assert (stalled.get("status"), stalled.get("reason")) == ("True", "ProgressDeadlineExceeded")
        status = status_of(client, namespace)
        assert status["servedVersion"] == 1
        assert status["failedVersion"] == 2
        assert status["history"][-1]["version"] == 2
        assert status["history"][-1]["outcome"] == "RolledBack"
        # Back on version 1 and all of it ready again; no canary left; still Available.
        wait_for(
            lambda: (
                template_version(get(client, "Deployment", namespace, "iris")) == "1"
                and get(client, "Deployment", namespace, "iris-canary") is None
                and status_of(client, namespace).get("readyReplicas") == 2
            ),
            timeout=90,
            what="version 1 restored",
        )
        assert condition(get(client, "ModelDeployment", namespace, "iris"), "Available")["status"] == "True"
        warnings = [
            (reason, message) for kind, reason, message in events_of(client, namespace) if kind == "Warning"
        ]
        assert [reason for reason, _ in warnings].count("RolledBack") == 1
        # The failed version is not retried by itself (a spec change would retry it).
        served_template = template_version(get(client, "Deployment", namespace, "iris"))
        assert served_template == "1"


# --------------------------------------------------------------------------- bad references


def test_missing_or_rejected_versions_stall_and_recover(
    client: kube.Client, namespace: str, operator: Any, kubelet: Any
) -> None:
    # latest, but the model has no version at all.
    create_mdep(client, namespace, replicas=1)
    stalled = wait_condition(client, namespace, "Stalled", "True", reason="NoValidatedVersion", timeout=60)
    assert "no ModelVersion" in stalled["message"]
    assert get(client, "Deployment", namespace, "iris") is None
    assert any(
        kind == "Warning" and reason == "NoValidatedVersion"
        for kind, reason, _ in events_of(client, namespace)
    )

    # A pinned version that does not exist.
    create_mdep(client, namespace, name="pinned", replicas=1, version=3)
    wait_condition(
        client, namespace, "Stalled", "True", reason="ModelVersionNotFound", name="pinned", timeout=60
    )

    # A pinned version that was rejected.
    create_version(client, namespace, model="iris", version=4)
    validate_version(kubelet, namespace, "iris-v4", validated=False)
    create_mdep(client, namespace, name="rejected", replicas=1, version=4)
    wait_condition(
        client, namespace, "Stalled", "True", reason="VersionRejected", name="rejected", timeout=60
    )

    # Versions appear: both recover (retried with backoff, at most 10 s apart here).
    validated_versions(client, kubelet, namespace, 1, 3)
    for name, version in (("iris", "3"), ("pinned", "3")):
        # (latest may roll out version 1 first: it can be validated a moment before 3.)
        wait_for(
            lambda n=name, v=version: template_version(get(client, "Deployment", namespace, n)) == v,
            timeout=60,
            what=f"{name}'s Deployment at version {version}",
        )
        wait_for(
            lambda n=name: condition(get(client, "ModelDeployment", namespace, n), "Stalled") == {},
            timeout=30,
            what=f"{name} no longer Stalled",
        )
    assert get(client, "Deployment", namespace, "rejected") is None
