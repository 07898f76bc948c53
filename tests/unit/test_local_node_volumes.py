"""Volumes as local directories: files written from ConfigMaps and Secrets, claims to PV paths."""

from __future__ import annotations

import base64
import stat
from pathlib import Path
from typing import Any

import pytest

from modelcycle.local.node_env import ContainerConfigError, EnvContext
from modelcycle.local.node_volumes import VolumeLookups, VolumeNotReady, prepare_volumes


def lookups(*, claims: dict[str, Any] | None = None, volumes: dict[str, Any] | None = None) -> VolumeLookups:
    configmaps = {"cfg": {"data": {"app.yaml": "a: 1\n", "other": "x"}}}
    secrets = {"sec": {"data": {"token": base64.b64encode(b"s3cret").decode()}}}
    return VolumeLookups(
        env=EnvContext(pod_ip="127.1.0.7", configmaps=configmaps.get, secrets=secrets.get),
        claims=(claims or {}).get,
        volumes=(volumes or {}).get,
    )


def pod(*volumes: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"app": "x"}},
        "spec": {"containers": [{"name": "c"}], "volumes": list(volumes)},
    }


def test_empty_dir_config_map_secret_and_downward_api(tmp_path: Path) -> None:
    dirs = prepare_volumes(
        pod(
            {"name": "scratch", "emptyDir": {}},
            {
                "name": "config",
                "configMap": {"name": "cfg", "items": [{"key": "app.yaml", "path": "conf/app.yaml"}]},
            },
            {"name": "creds", "secret": {"secretName": "sec", "defaultMode": 0o400}},
            {
                "name": "info",
                "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]},
            },
            {
                "name": "all",
                "projected": {
                    "sources": [
                        {"configMap": {"name": "cfg"}},
                        {"secret": {"name": "sec"}},
                        {"serviceAccountToken": {"path": "token-ignored"}},
                    ]
                },
            },
        ),
        tmp_path,
        lookups(),
    )
    assert Path(dirs["scratch"]).is_dir()
    assert (Path(dirs["config"]) / "conf" / "app.yaml").read_text() == "a: 1\n"
    assert not (Path(dirs["config"]) / "other").exists()  # only the listed items
    token = Path(dirs["creds"]) / "token"
    assert token.read_bytes() == b"s3cret"
    assert stat.S_IMODE(token.stat().st_mode) == 0o400
    assert (Path(dirs["info"]) / "labels").read_text() == 'app="x"'
    assert sorted(p.name for p in Path(dirs["all"]).iterdir()) == ["app.yaml", "other", "token"]


def test_missing_config_map_is_a_config_error_unless_optional(tmp_path: Path) -> None:
    with pytest.raises(ContainerConfigError, match='configmap "absent" not found'):
        prepare_volumes(pod({"name": "v", "configMap": {"name": "absent"}}), tmp_path, lookups())
    dirs = prepare_volumes(
        pod({"name": "v", "configMap": {"name": "absent", "optional": True}}), tmp_path, lookups()
    )
    assert list(Path(dirs["v"]).iterdir()) == []


def test_claim_maps_to_the_bound_local_volume_path(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    claims = {"data": {"spec": {"volumeName": "pv1"}, "status": {"phase": "Bound"}}}
    volumes = {"pv1": {"spec": {"local": {"path": str(store)}}}}
    dirs = prepare_volumes(
        pod({"name": "d", "persistentVolumeClaim": {"claimName": "data"}}),
        tmp_path / "v",
        lookups(claims=claims, volumes=volumes),
    )
    assert dirs == {"d": str(store)}


def test_claim_to_host_path_volume_creates_the_directory(tmp_path: Path) -> None:
    claims = {"data": {"spec": {"volumeName": "pv1"}, "status": {"phase": "Bound"}}}
    volumes = {"pv1": {"spec": {"hostPath": {"path": str(tmp_path / "hp")}}}}
    dirs = prepare_volumes(
        pod({"name": "d", "persistentVolumeClaim": {"claimName": "data"}}),
        tmp_path,
        lookups(claims=claims, volumes=volumes),
    )
    assert Path(dirs["d"]).is_dir()


def test_unbound_or_unsupported_claims_explain_themselves(tmp_path: Path) -> None:
    volume = {"name": "d", "persistentVolumeClaim": {"claimName": "data"}}
    with pytest.raises(VolumeNotReady, match='"data" is not bound'):
        prepare_volumes(pod(volume), tmp_path, lookups(claims={"data": {"status": {"phase": "Pending"}}}))
    with pytest.raises(VolumeNotReady, match="not found"):
        prepare_volumes(pod(volume), tmp_path, lookups())
    bound = {"data": {"spec": {"volumeName": "pv1"}, "status": {"phase": "Bound"}}}
    nfs = {"pv1": {"spec": {"nfs": {"server": "x", "path": "/"}}}}
    with pytest.raises(ContainerConfigError, match="neither a local nor a hostPath"):
        prepare_volumes(pod(volume), tmp_path, lookups(claims=bound, volumes=nfs))
    missing = {"pv1": {"spec": {"local": {"path": str(tmp_path / "absent")}}}}
    with pytest.raises(ContainerConfigError, match="does not exist on this machine"):
        prepare_volumes(pod(volume), tmp_path, lookups(claims=bound, volumes=missing))


def test_unsupported_volume_type_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ContainerConfigError, match="csi volumes are not supported"):
        prepare_volumes(pod({"name": "v", "csi": {"driver": "x"}}), tmp_path, lookups())
