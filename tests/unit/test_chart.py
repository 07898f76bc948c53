"""charts/modelcycle rendered with `helm template` (no cluster): structure, security, values and schema.

Needs the helm binary (tools/controlplane/build.sh builds it): skipped without it on a laptop,
failed in CI.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.cluster import require_binaries
from support.repo import deploy_sync

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "modelcycle"
RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


@pytest.fixture(scope="module", autouse=True)
def _helm() -> None:
    require_binaries(("helm",))


def render(
    values: dict[str, Any] | None = None, *, namespace: str = "mc", include_crds: bool = False
) -> list[dict[str, Any]]:
    result = deploy_sync().run_helm(
        "template", release="rel", namespace=namespace, values=values, include_crds=include_crds
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def render_error(values: dict[str, Any]) -> str:
    result = deploy_sync().run_helm("template", release="rel", namespace="mc", values=values)
    assert result.returncode != 0, f"helm template accepted {values}"
    return result.stderr


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in of_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"want one {kind} {name or ''}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def operator_container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["operator"]
    return dict(containers[0])


# --------------------------------------------------------------------------- lint


@pytest.mark.parametrize(
    "values",
    [
        None,
        {"watchNamespaces": ["team-a", "team-b"]},
        {"operator": {"replicas": 2}, "peering": {"enabled": True}},
        {"artifacts": {"type": "s3", "s3": {"uri": "s3://models/prod", "secretName": "s3-creds"}}},
        {
            "metrics": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}},
            "dashboards": {"enabled": True},
            "networkPolicy": {"enabled": True, "allowedNamespaces": [{"matchLabels": {"team": "web"}}]},
        },
    ],
    ids=["defaults", "namespaced", "peering", "s3", "observability"],
)
def test_helm_lint_strict_is_clean(values: dict[str, Any] | None) -> None:
    result = deploy_sync().run_helm("lint", "--strict", values=values)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


# --------------------------------------------------------------------------- the operator Deployment


def test_operator_deployment_defaults() -> None:
    docs = render()
    deployment = one(docs, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["automountServiceAccountToken"] is True
    assert pod["serviceAccountName"] == "rel-modelcycle-operator"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = operator_container(deployment)
    assert container["securityContext"] == RESTRICTED_CONTAINER
    assert container["command"] == ["modelcycle"]
    assert container["args"][0] == "operator"
    assert container["image"] == "modelcycle/operator:0.1.0"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8080, "metrics": 8081}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    args = container["args"]
    assert "--liveness-port=8080" in args and "--metrics-port=8081" in args
    assert "--workload-image=modelcycle/workload:0.1.0" in args
    assert "--artifact-claim=modelcycle-artifacts" in args
    assert not [a for a in args if a.startswith(("--namespace", "--peering", "--s3"))]
    # a read-only root filesystem needs a writable /tmp
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


def test_operator_flags_in_the_chart_exist_in_the_cli() -> None:
    """Every `--flag=` the chart can pass is one `modelcycle operator` accepts."""
    import argparse

    from modelcycle.controllers import main as operator_main

    parser = argparse.ArgumentParser()
    operator_main.configure(parser)
    known = {option for action in parser._actions for option in action.option_strings}
    docs = render(
        {
            "watchNamespaces": ["a"],
            "operator": {"replicas": 2, "verbose": True},
            "peering": {"enabled": True},
            "artifacts": {
                "type": "s3",
                "s3": {"uri": "s3://bucket/p", "endpoint": "http://minio:9000", "secretName": "s"},
            },
        }
    )
    for deployment in of_kind(docs, "Deployment"):
        for arg in operator_container(deployment)["args"][1:]:
            assert arg.split("=", 1)[0] in known, f"chart passes {arg}, unknown to `modelcycle operator`"


def test_image_digest_wins_over_tag() -> None:
    digest = "sha256:" + "a" * 64
    docs = render({"operator": {"image": {"repository": "r.example/op", "tag": "9", "digest": digest}}})
    assert operator_container(one(docs, "Deployment"))["image"] == f"r.example/op@{digest}"


def test_watch_namespaces_uses_roles_per_namespace() -> None:
    docs = render({"watchNamespaces": ["team-a", "team-b"]})
    args = operator_container(one(docs, "Deployment"))["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args
    roles = {d["metadata"]["namespace"] for d in of_kind(docs, "Role")}
    bindings = {d["metadata"]["namespace"] for d in of_kind(docs, "RoleBinding")}
    assert roles == bindings == {"team-a", "team-b"}
    for binding in of_kind(docs, "RoleBinding"):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "rel-modelcycle-operator", "namespace": "mc"}
        ]
    # Only cluster-scoped resources stay in a ClusterRole.
    cluster_scoped = deploy_sync().CLUSTER_SCOPED
    for role in of_kind(docs, "ClusterRole"):
        for rule in role["rules"]:
            assert all(r.split("/")[0] in cluster_scoped for r in rule.get("resources", [])), rule
    # Per-namespace pieces go to the watched namespaces.
    assert {d["metadata"]["namespace"] for d in of_kind(docs, "PersistentVolumeClaim")} == {
        "team-a",
        "team-b",
    }


def test_peering_gives_each_instance_its_own_deployment_and_priority() -> None:
    docs = render(
        {"operator": {"replicas": 3}, "peering": {"enabled": True, "priority": 50}}, include_crds=True
    )
    deployments = of_kind(docs, "Deployment")
    assert [d["metadata"]["name"] for d in deployments] == [
        "rel-modelcycle-operator",
        "rel-modelcycle-operator-1",
        "rel-modelcycle-operator-2",
    ]
    priorities = []
    for deployment in deployments:
        assert deployment["spec"]["replicas"] == 1
        assert deployment["spec"]["strategy"]["type"] == "Recreate"
        args = operator_container(deployment)["args"]
        assert "--peering=modelcycle" in args
        priorities += [int(a.split("=")[1]) for a in args if a.startswith("--priority=")]
    assert priorities == [50, 49, 48]
    selectors = [json.dumps(d["spec"]["selector"], sort_keys=True) for d in deployments]
    assert len(set(selectors)) == 3, "instances must not select each other's pods"
    crds = {d["metadata"]["name"] for d in of_kind(docs, "CustomResourceDefinition")}
    assert {"clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"} <= crds
    assert one(docs, "ClusterKopfPeering")["metadata"]["name"] == "modelcycle"
    rules = one(docs, "ClusterRole")["rules"]
    assert {
        "apiGroups": ["kopf.dev"],
        "resources": ["clusterkopfpeerings"],
        "verbs": ["get", "list", "watch", "patch"],
    } in rules


def test_peering_in_watched_namespaces_uses_namespaced_peerings() -> None:
    docs = render({"watchNamespaces": ["a", "b"], "peering": {"enabled": True}})
    assert {d["metadata"]["namespace"] for d in of_kind(docs, "KopfPeering")} == {"a", "b"}
    assert not of_kind(docs, "ClusterKopfPeering")
    for role in of_kind(docs, "Role"):
        assert any(r["resources"] == ["kopfpeerings"] for r in role["rules"])


def test_no_peering_crds_without_peering() -> None:
    docs = render(include_crds=True)
    groups = {d["spec"]["group"] for d in of_kind(docs, "CustomResourceDefinition")}
    assert groups == {"modelcycle.io"}
    assert not of_kind(docs, "ClusterKopfPeering")


# --------------------------------------------------------------------------- identities and RBAC


def test_service_accounts_only_the_operator_mounts_a_token() -> None:
    docs = render()
    accounts = {d["metadata"]["name"]: d for d in of_kind(docs, "ServiceAccount")}
    assert accounts["rel-modelcycle-operator"]["automountServiceAccountToken"] is True
    assert accounts["modelcycle-workload"]["automountServiceAccountToken"] is False
    bound = {s["name"] for d in docs if d["kind"].endswith("Binding") for s in d["subjects"]}
    assert bound == {"rel-modelcycle-operator"}, "the workload ServiceAccount must have no permissions"


@pytest.mark.parametrize("values", [None, {"watchNamespaces": ["a"]}, {"peering": {"enabled": True}}])
def test_rbac_is_least_privilege(values: dict[str, Any] | None) -> None:
    docs = render(values)
    roles = [d for d in docs if d["kind"] in ("ClusterRole", "Role")]
    assert roles
    for role in roles:
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule.get(key, []), f"wildcard in {role['metadata']['name']}: {rule}"
            assert not {"secrets", "pods/exec", "pods/attach", "pods/portforward"} & set(
                rule.get("resources", [])
            )
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])


def test_rbac_rules_come_from_the_generated_file() -> None:
    rules = yaml.safe_load((CHART / "files" / "operator-rbac.yaml").read_text())
    rendered = one(render(), "ClusterRole")["rules"]
    assert rendered == rules["namespaced"] + rules["cluster"]


# --------------------------------------------------------------------------- artifacts


def test_artifact_pvc_defaults() -> None:
    pvc = one(render(), "PersistentVolumeClaim")
    assert pvc["metadata"]["name"] == "modelcycle-artifacts"
    assert pvc["metadata"]["namespace"] == "mc"
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert pvc["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert "storageClassName" not in pvc["spec"]


def test_artifact_pvc_size_and_storage_class() -> None:
    pvc = one(
        render({"artifacts": {"pvc": {"size": "50Gi", "storageClass": "fast", "keep": False}}}),
        "PersistentVolumeClaim",
    )
    assert pvc["spec"]["resources"]["requests"]["storage"] == "50Gi"
    assert pvc["spec"]["storageClassName"] == "fast"
    assert "annotations" not in pvc["metadata"]


def test_s3_artifacts_pass_settings_and_secret_reference() -> None:
    docs = render(
        {
            "artifacts": {
                "type": "s3",
                "s3": {
                    "uri": "s3://models/prod",
                    "endpoint": "http://minio.minio:9000",
                    "secretName": "s3-creds",
                },
            }
        }
    )
    assert not of_kind(docs, "PersistentVolumeClaim")
    container = operator_container(one(docs, "Deployment"))
    args = container["args"]
    assert {
        "--s3-uri=s3://models/prod",
        "--s3-endpoint=http://minio.minio:9000",
        "--s3-secret=s3-creds",
    } <= set(args)
    assert not [a for a in args if a.startswith("--artifact-claim")]
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in container["env"]
        if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]
    }
    assert refs == {
        "AWS_ACCESS_KEY_ID": {"name": "s3-creds", "key": "AWS_ACCESS_KEY_ID"},
        "AWS_SECRET_ACCESS_KEY": {"name": "s3-creds", "key": "AWS_SECRET_ACCESS_KEY"},
    }


# --------------------------------------------------------------------------- observability and network


def test_monitors_dashboard_and_network_policy_are_off_by_default() -> None:
    kinds = {d["kind"] for d in render()}
    assert not kinds & {"ServiceMonitor", "PodMonitor", "ConfigMap", "NetworkPolicy", "Service"}


def test_service_monitor_and_pod_monitor() -> None:
    docs = render(
        {
            "metrics": {
                "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
                "podMonitor": {"enabled": True},
            }
        }
    )
    service = one(docs, "Service")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 8081, "targetPort": "metrics", "protocol": "TCP"}
    ]
    monitor = one(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items()
        <= service["metadata"]["labels"].items() | service["spec"]["selector"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True, "object namespaces must survive the scrape"
    pod_monitor = one(docs, "PodMonitor")
    assert pod_monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] == "http"
    assert pod_monitor["spec"]["namespaceSelector"] == {"any": True}


def test_serving_selectors_match_the_pods_the_operator_creates() -> None:
    """The PodMonitor and NetworkPolicy select what builders/serving.py labels serving pods with."""
    from modelcycle.api import modelversion
    from modelcycle.builders import serving

    mdep = {
        "apiVersion": "modelcycle.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "iris", "namespace": "mc", "uid": "u1"},
        "spec": {"model": "iris"},
    }
    mv = {
        "apiVersion": "modelcycle.io/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {"name": "iris-v1", "namespace": "mc", "uid": "u2"},
        "spec": {"model": "iris", "version": 1, "artifact": {"uri": "pvc://m/iris", "sha256": "0" * 64}},
    }
    labels = serving.pod_labels(
        mdep,
        serving.parse_spec(mdep),
        modelversion.ModelVersionSpec.model_validate(mv["spec"]),
        serving.STABLE,
    )
    docs = render({"metrics": {"podMonitor": {"enabled": True}}, "networkPolicy": {"enabled": True}})
    for selector in (
        one(docs, "PodMonitor")["spec"]["selector"]["matchLabels"],
        one(docs, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"],
    ):
        assert selector.items() <= labels.items(), (selector, labels)
    assert serving.PORT == 8080 and serving.PORT_NAME == "http"
    assert serving.GRPC_PORT == 8081 and serving.GRPC_PORT_NAME == "grpc"


def test_network_policy_allows_only_8080_and_8081_from_operator_and_selected_peers() -> None:
    docs = render(
        {
            "networkPolicy": {
                "enabled": True,
                "allowedNamespaces": [{"matchLabels": {"kubernetes.io/metadata.name": "gateway"}}],
                "allowedPods": [{"matchLabels": {"app": "frontend"}}],
            }
        }
    )
    policy = one(docs, "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (ingress,) = policy["spec"]["ingress"]
    assert ingress["ports"] == [{"port": 8080, "protocol": "TCP"}, {"port": 8081, "protocol": "TCP"}]
    peers = ingress["from"]
    assert peers[0]["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "mc"}}
    assert peers[0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "operator"
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateway"}}} in peers
    assert {"podSelector": {"matchLabels": {"app": "frontend"}}} in peers


def test_dashboard_config_map() -> None:
    config_map = one(render({"dashboards": {"enabled": True}}), "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["modelcycle.json"])
    assert dashboard == json.loads((CHART / "dashboards" / "modelcycle.json").read_text())


# --------------------------------------------------------------------------- values and schema


def _leaf_paths(value: Any, prefix: str = "") -> list[str]:
    if isinstance(value, dict) and value:
        return [p for key, sub in value.items() for p in _leaf_paths(sub, f"{prefix}/{key}")]
    return [prefix]


def _schema_at(schema: dict[str, Any], path: str) -> dict[str, Any] | None:
    node: dict[str, Any] | None = schema
    for part in path.strip("/").split("/"):
        if node is None:
            return None
        properties = node.get("properties", {})
        if part in properties:
            node = properties[part]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return None
    return node


def test_every_value_is_described_by_the_schema() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    for path in _leaf_paths(values):
        node = _schema_at(schema, path)
        assert node is not None, f"values.yaml{path} has no entry in values.schema.json"
    for path in [p for p in _leaf_paths(values) if p.count("/") <= 2]:
        node = _schema_at(schema, path)
        assert node and node.get("description"), f"values.schema.json{path} needs a description"


def test_defaults_satisfy_the_schema() -> None:
    import jsonschema

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.validate(values, schema)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"operator": {"replicas": "two"}}, "at '/operator/replicas': got string, want integer"),
        ({"artifacts": {"type": "nfs"}}, "at '/artifacts/type': value must be one of 'pvc', 's3'"),
        ({"watchNamespaces": ["Team_A"]}, "at '/watchNamespaces/0'"),
        ({"operator": {"image": {"digest": "latest"}}}, "at '/operator/image/digest'"),
        ({"artifacts": {"pvc": {"size": "ten gigs"}}}, "at '/artifacts/pvc/size'"),
        ({"operatr": {}}, "additional properties 'operatr' not allowed"),
        ({"metrics": {"serviceMonitor": {"interval": "often"}}}, "at '/metrics/serviceMonitor/interval'"),
    ],
)
def test_schema_rejects_bad_values_with_a_clear_message(values: dict[str, Any], message: str) -> None:
    stderr = render_error(values)
    assert "values don't meet the specifications of the schema" in stderr
    assert message in stderr


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"operator": {"replicas": 2}}, "operator.replicas > 1 needs peering.enabled=true"),
        ({"artifacts": {"type": "s3"}}, "artifacts.type=s3 needs artifacts.s3.uri"),
        ({"artifacts": {"s3": {"uri": "s3://bucket/p"}}}, "set artifacts.type=s3"),
        ({"operator": {"metricsPort": 8080}}, "must differ"),
    ],
)
def test_cross_field_rules_fail_with_a_clear_message(values: dict[str, Any], message: str) -> None:
    assert message in render_error(values)


def test_chart_version_and_app_version_match_the_package() -> None:
    import modelcycle

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == modelcycle.__version__
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(rf'^version = "{re.escape(modelcycle.__version__)}"$', pyproject, re.M)
