"""The local node's pure rules: $(VAR) expansion, env resolution, path mapping, pod IPs, commands."""

from __future__ import annotations

import base64
import json
import os
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from modelcycle.local.node_env import (
    PATH_MAP_ENV,
    CommandNotFoundError,
    ContainerConfigError,
    EnvContext,
    PathMap,
    allocate_ip,
    base_environment,
    candidate_ips,
    container_mount_pairs,
    executable_search_path,
    expand,
    field_ref_value,
    parse_quantity,
    plan_container,
    resolve_env,
    resolve_executable,
    resource_field_value,
    rewrite_wildcard_host,
    with_serve_host,
)

POD: dict[str, Any] = {
    "metadata": {
        "name": "web-1",
        "namespace": "team",
        "uid": "1234-abcd",
        "labels": {"app": "web", "tier": "front"},
        "annotations": {"note": 'say "hi"'},
    },
    "spec": {"nodeName": "modelcycle-local", "serviceAccountName": "runner", "containers": []},
}

CONFIGMAPS = {
    "settings": {"data": {"LEVEL": "debug", "MODE": "fast", "bad key": "x"}},
    "files": {"data": {"a.txt": "alpha"}, "binaryData": {"b.bin": base64.b64encode(b"\x00\x01").decode()}},
}
SECRETS = {"creds": {"data": {"TOKEN": base64.b64encode(b"s3cret").decode()}}}


def ctx(pod_ip: str = "127.1.2.3") -> EnvContext:
    return EnvContext(
        pod_ip=pod_ip,
        configmaps=CONFIGMAPS.get,
        secrets=SECRETS.get,
        allocatable={"cpu": "4", "memory": "8Gi", "ephemeral-storage": "100Gi"},
    )


# --------------------------------------------------------------------------- quantities and expansion


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("100m", Fraction(1, 10)),
        ("2", Fraction(2)),
        ("1Gi", Fraction(2**30)),
        ("1.5k", Fraction(1500)),
        ("1e3", Fraction(1000)),
    ],
)
def test_parse_quantity(text: str, value: Fraction) -> None:
    assert parse_quantity(text) == value


def test_parse_quantity_refuses_garbage() -> None:
    with pytest.raises(ValueError, match="not a quantity"):
        parse_quantity("12 apples")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)/x", "one/x"),
        ("$(A)$(B)", "onetwo"),
        ("$$(A)", "$(A)"),
        ("$(MISSING)", "$(MISSING)"),
        ("cost $5", "cost $5"),
        ("$(A", "$(A"),
        ("trailing $", "trailing $"),
    ],
)
def test_expand_follows_the_kubelet(text: str, expected: str) -> None:
    assert expand(text, {"A": "one", "B": "two"}) == expected


# --------------------------------------------------------------------------- downward API


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("metadata.name", "web-1"),
        ("metadata.namespace", "team"),
        ("metadata.uid", "1234-abcd"),
        ("metadata.labels['tier']", "front"),
        ("metadata.labels['absent']", ""),
        ("metadata.annotations['note']", 'say "hi"'),
        ("spec.nodeName", "modelcycle-local"),
        ("spec.serviceAccountName", "runner"),
        ("status.podIP", "127.1.2.3"),
        ("status.podIPs", "127.1.2.3"),
        ("status.hostIP", "127.0.0.1"),
    ],
)
def test_field_refs(path: str, value: str) -> None:
    assert field_ref_value(POD, path, pod_ip="127.1.2.3") == value


def test_whole_labels_field_is_formatted_like_a_downward_api_file() -> None:
    assert field_ref_value(POD, "metadata.labels", pod_ip="x") == 'app="web"\ntier="front"'


def test_unknown_field_ref_is_a_config_error() -> None:
    with pytest.raises(ContainerConfigError, match="unsupported fieldRef"):
        field_ref_value(POD, "spec.nope", pod_ip="x")


def test_resource_field_refs_use_limits_then_node_allocatable() -> None:
    container = {"resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"memory": "1Gi"}}}
    allocatable = {"cpu": "4", "memory": "8Gi"}
    assert resource_field_value(container, {"resource": "requests.cpu"}, allocatable=allocatable) == "1"
    assert (
        resource_field_value(
            container, {"resource": "requests.cpu", "divisor": "1m"}, allocatable=allocatable
        )
        == "250"
    )
    assert (
        resource_field_value(
            container, {"resource": "limits.memory", "divisor": "1Mi"}, allocatable=allocatable
        )
        == "1024"
    )
    assert resource_field_value(container, {"resource": "limits.cpu"}, allocatable=allocatable) == "4"


# --------------------------------------------------------------------------- env


def test_env_resolution_order_and_sources() -> None:
    container = {
        "envFrom": [
            {"configMapRef": {"name": "settings"}, "prefix": "CFG_"},
            {"secretRef": {"name": "creds"}},
        ],
        "env": [
            {"name": "PLAIN", "value": "v"},
            {"name": "COMBINED", "value": "$(PLAIN)-$(CFG_LEVEL)-$(UNDEFINED)"},
            {"name": "CFG_MODE", "value": "overridden"},
            {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "TIER", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['tier']"}}},
            {"name": "LVL", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "LEVEL"}}},
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "TOKEN"}}},
            {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": True}}},
        ],
    }
    env = resolve_env(POD, container, ctx())
    assert env == {
        "CFG_LEVEL": "debug",
        "CFG_MODE": "overridden",
        "TOKEN": "s3cret",
        "PLAIN": "v",
        "COMBINED": "v-debug-$(UNDEFINED)",
        "NAME": "web-1",
        "IP": "127.1.2.3",
        "TIER": "front",
        "LVL": "debug",
        "PW": "s3cret",
        "OPT": "",
    }
    assert "CFG_bad key" not in env  # invalid names are skipped, as the kubelet does


@pytest.mark.parametrize(
    ("container", "message"),
    [
        ({"envFrom": [{"configMapRef": {"name": "absent"}}]}, 'configmap "absent" not found'),
        (
            {"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k"}}}]},
            'secret "absent" not found',
        ),
        (
            {"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "NOPE"}}}]},
            "couldn't find key NOPE in ConfigMap team/settings",
        ),
    ],
)
def test_missing_references_are_config_errors(container: dict[str, Any], message: str) -> None:
    with pytest.raises(ContainerConfigError) as raised:
        resolve_env(POD, container, ctx())
    assert str(raised.value) == message
    assert raised.value.reason == "CreateContainerConfigError"


def test_optional_envfrom_source_may_be_absent() -> None:
    assert (
        resolve_env(POD, {"envFrom": [{"configMapRef": {"name": "absent", "optional": True}}]}, ctx()) == {}
    )


# --------------------------------------------------------------------------- paths


def test_path_map_rewrites_whole_path_prefixes_only() -> None:
    paths = PathMap.of(
        [("/artifacts", "/state/pv"), ("/data", "/state/data"), ("/data/cache", "/state/cache")]
    )
    assert paths.rewrite("/artifacts") == "/state/pv"
    assert paths.rewrite("/artifacts/models/m.skops") == "/state/pv/models/m.skops"
    assert paths.rewrite("--store=/artifacts") == "--store=/state/pv"
    assert paths.rewrite("a:/data:/data/cache/x") == "a:/state/data:/state/cache/x"
    assert paths.rewrite("pvc:///artifacts/x") == "pvc:///artifacts/x"  # after a slash: part of a URI
    assert paths.rewrite("s3://bucket/artifacts/x") == "s3://bucket/artifacts/x"
    assert paths.rewrite("/artifactsX") == "/artifactsX"
    assert paths.rewrite("/other/artifacts") == "/other/artifacts"
    assert paths.rewrite("copy /data/a '/artifacts/b'") == "copy /state/data/a '/state/pv/b'"


def test_path_map_local_lookup_and_json() -> None:
    paths = PathMap.of([("/artifacts/", "/state/pv"), ("/", "/ignored"), ("relative", "/ignored")])
    assert paths.local("/artifacts/x/y") == "/state/pv/x/y"
    assert paths.local("/elsewhere") is None
    assert json.loads(paths.as_json()) == {"/artifacts": "/state/pv"}


def test_mount_pairs_with_sub_paths() -> None:
    container = {
        "volumeMounts": [
            {"name": "store", "mountPath": "/artifacts"},
            {"name": "store", "mountPath": "/models", "subPath": "models"},
            {"name": "cfg", "mountPath": "/etc/app/app.yaml", "subPathExpr": "$(POD_NAME).yaml"},
        ]
    }
    pairs = container_mount_pairs(container, {"store": "/s", "cfg": "/c"}, {"POD_NAME": "p"})
    assert pairs == [("/artifacts", "/s"), ("/models", "/s/models"), ("/etc/app/app.yaml", "/c/p.yaml")]


def test_mount_of_unknown_volume_or_escaping_sub_path_is_refused() -> None:
    with pytest.raises(ContainerConfigError, match="names no volume"):
        container_mount_pairs({"volumeMounts": [{"name": "x", "mountPath": "/x"}]}, {}, {})
    with pytest.raises(ContainerConfigError, match="relative path"):
        container_mount_pairs(
            {"volumeMounts": [{"name": "x", "mountPath": "/x", "subPath": "../up"}]}, {"x": "/x"}, {}
        )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.0.0.0", "127.1.0.9"),
        ("--host=0.0.0.0", "--host=127.1.0.9"),
        ("0.0.0.0:8080", "127.1.0.9:8080"),
        ("[::]:8080", "127.1.0.9:8080"),
        ("::", "127.1.0.9"),
        ("10.0.0.0", "10.0.0.0"),
        ("http://0.0.0.0:80/", "http://0.0.0.0:80/"),
        (":::80", ":::80"),
    ],
)
def test_wildcard_hosts_become_the_pod_ip(text: str, expected: str) -> None:
    assert rewrite_wildcard_host(text, "127.1.0.9") == expected


def test_serve_without_host_gets_the_pod_ip() -> None:
    assert with_serve_host(["/v/bin/modelcycle", "serve", "--port", "80"], "127.1.0.9")[-2:] == [
        "--host",
        "127.1.0.9",
    ]
    assert with_serve_host(["/v/bin/modelcycle", "serve", "--host=1.2.3.4"], "127.1.0.9") == [
        "/v/bin/modelcycle",
        "serve",
        "--host=1.2.3.4",
    ]
    assert with_serve_host(["/v/bin/modelcycle", "train"], "127.1.0.9") == ["/v/bin/modelcycle", "train"]


# --------------------------------------------------------------------------- pod IPs


def test_ip_allocation_is_stable_per_uid_and_avoids_taken_addresses() -> None:
    first = allocate_ip("uid-a", [])
    assert first == allocate_ip("uid-a", [])
    assert first.startswith("127.1.")
    assert first.split(".")[-1] not in ("0", "255")
    other = allocate_ip("uid-a", [first])
    assert other != first
    assert allocate_ip("uid-b", []) != first  # with overwhelming probability, and deterministic


def test_ip_allocation_fills_a_small_network_then_fails() -> None:
    network = "127.9.9.0/30"  # .0 .1 .2 .3 minus .0 → three addresses
    taken: list[str] = []
    for n in range(3):
        taken.append(allocate_ip(f"uid-{n}", taken, network))
    assert sorted(taken) == ["127.9.9.1", "127.9.9.2", "127.9.9.3"]
    with pytest.raises(RuntimeError, match="no free address"):
        allocate_ip("uid-x", taken, network)


def test_pod_network_must_be_loopback() -> None:
    with pytest.raises(ValueError, match="loopback"):
        next(candidate_ips("u", "10.0.0.0/8"))


# --------------------------------------------------------------------------- commands and plans


def test_search_path_puts_the_agents_bin_dir_first(tmp_path: Path) -> None:
    assert (
        executable_search_path(None, bin_dir="/venv/bin", default_path="/usr/bin:/venv/bin")
        == "/venv/bin:/usr/bin"
    )
    assert (
        executable_search_path("/opt/bin", bin_dir="/venv/bin", default_path="/usr/bin")
        == "/venv/bin:/opt/bin"
    )


def test_resolve_executable(tmp_path: Path) -> None:
    tool = tmp_path / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert resolve_executable("tool", search_path=f"/nonexistent:{tmp_path}", cwd="/") == str(tool)
    assert resolve_executable("./tool", search_path="", cwd=str(tmp_path)) == str(tool)
    assert resolve_executable("missing-tool", search_path=str(tmp_path), cwd="/") is None


def _plan(
    pod: dict[str, Any], container: dict[str, Any], tmp_path: Path, volumes: dict[str, str] | None = None
) -> Any:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return plan_container(
        pod,
        container,
        ctx=ctx(),
        volume_dirs=volumes or {},
        termination_log=str(tmp_path / "termination-log"),
        default_cwd=str(work),
        base_env=base_environment({"LANG": "C.UTF-8", "SECRET_OF_AGENT": "x"}, node_name="n1"),
        bin_dir=str(Path(sys.executable).parent),
        host_path=os.environ.get("PATH", ""),
    )


def test_plan_applies_every_rule(tmp_path: Path) -> None:
    store = tmp_path / "pv"
    store.mkdir()
    container = {
        "name": "train",
        "command": ["modelcycle"],
        "args": ["train", "--out", "/artifacts/$(RUN)", "--host", "0.0.0.0"],
        "env": [
            {"name": "RUN", "value": "r1"},
            {"name": "MODELCYCLE_STORE", "value": "/artifacts"},
            {"name": "MODELCYCLE_TERMINATION_LOG", "value": "/dev/termination-log"},
        ],
        "volumeMounts": [{"name": "store", "mountPath": "/artifacts"}],
        "terminationMessagePath": "/dev/termination-log",
    }
    plan = _plan(POD, container, tmp_path, {"store": str(store)})
    assert plan.argv[0] == str(Path(sys.executable).parent / "modelcycle")
    assert list(plan.argv[1:]) == ["train", "--out", f"{store}/r1", "--host", "127.1.2.3"]
    assert plan.env["MODELCYCLE_STORE"] == str(store)
    assert plan.env["MODELCYCLE_TERMINATION_LOG"] == str(tmp_path / "termination-log")
    assert plan.env["POD_IP"] == "127.1.2.3"
    assert plan.env["HOSTNAME"] == "web-1"
    assert plan.env["LANG"] == "C.UTF-8"
    assert "SECRET_OF_AGENT" not in plan.env
    assert plan.env["PATH"].split(":")[0] == str(Path(sys.executable).parent)
    assert json.loads(plan.env[PATH_MAP_ENV]) == {
        "/artifacts": str(store),
        "/dev/termination-log": str(tmp_path / "termination-log"),
    }
    assert plan.cwd == str(tmp_path / "work")


def test_plan_without_command_or_with_unknown_command_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(CommandNotFoundError, match="has no command"):
        _plan(POD, {"name": "c", "args": ["x"]}, tmp_path)
    with pytest.raises(CommandNotFoundError, match='command "no-such-tool-here" not found') as raised:
        _plan(POD, {"name": "c", "command": ["no-such-tool-here"]}, tmp_path)
    assert raised.value.reason == "CommandNotFound"


def test_plan_keeps_wildcards_with_host_network(tmp_path: Path) -> None:
    pod = {**POD, "spec": {**POD["spec"], "hostNetwork": True}}
    plan = _plan(
        pod, {"name": "c", "command": ["python", "-m", "http.server", "--bind", "0.0.0.0"]}, tmp_path
    )
    assert plan.argv[-1] == "0.0.0.0"
