"""Volumes of a pod as local directories under the pod's state directory.

emptyDir → a directory; configMap / secret / downwardAPI / projected → a directory of files,
written once when the pod starts; persistentVolumeClaim → the bound PersistentVolume's
`spec.local.path` or `spec.hostPath.path`; hostPath → that path. Anything else is refused with
a clear message.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelcycle.local.node_env import (
    ContainerConfigError,
    EnvContext,
    field_ref_value,
    object_data,
    resource_field_value,
)


class VolumeNotReady(ContainerConfigError):
    """A volume cannot be set up yet (an unbound claim); the node retries."""

    reason = "VolumeNotReady"


@dataclass(frozen=True)
class VolumeLookups:
    env: EnvContext
    claims: Callable[[str], Mapping[str, Any] | None]
    volumes: Callable[[str], Mapping[str, Any] | None]


def _write_files(directory: Path, files: Mapping[str, bytes], modes: Mapping[str, int]) -> None:
    """Make the directory hold exactly `files` (relative paths). Each file is replaced atomically,
    so a process that is running (an agent re-attached to it) never sees one missing or half written."""
    directory.mkdir(parents=True, exist_ok=True)
    wanted: set[Path] = set()
    for relative, data in files.items():
        if os.path.isabs(relative) or ".." in Path(relative).parts:
            raise ContainerConfigError(f'volume item path "{relative}" must be relative without ".."')
        target = directory / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(data)
        tmp.chmod(modes.get(relative, 0o644) & 0o777)
        tmp.replace(target)
        wanted.add(target)
    for path in sorted(directory.rglob("*"), reverse=True):
        if path.is_file() and path not in wanted:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def _select(
    data: Mapping[str, bytes],
    items: list[dict[str, Any]] | None,
    default_mode: int,
    what: str,
    optional: bool,
) -> tuple[dict[str, bytes], dict[str, int]]:
    if not items:
        return dict(data), dict.fromkeys(data, default_mode)
    files: dict[str, bytes] = {}
    modes: dict[str, int] = {}
    for item in items:
        key, path = str(item["key"]), str(item["path"])
        if key not in data:
            if optional:
                continue
            raise ContainerConfigError(f"configmap or secret {what} has no key {key}")
        files[path] = data[key]
        modes[path] = int(item.get("mode", default_mode))
    return files, modes


def _keyed_source(
    source: Mapping[str, Any], *, secret: bool, lookups: VolumeLookups, namespace: str, default_mode: int
) -> tuple[dict[str, bytes], dict[str, int]]:
    name = str(source.get("secretName" if secret and "secretName" in source else "name", ""))
    optional = bool(source.get("optional"))
    data = object_data(
        lookups.env.secrets if secret else lookups.env.configmaps,
        name,
        secret=secret,
        optional=optional,
        namespace=namespace,
    )
    if data is None:
        return {}, {}
    mode = int(source.get("defaultMode", default_mode))
    return _select(data, source.get("items"), mode, name, optional)


def _downward_files(
    pod: Mapping[str, Any], source: Mapping[str, Any], *, lookups: VolumeLookups, default_mode: int
) -> tuple[dict[str, bytes], dict[str, int]]:
    files: dict[str, bytes] = {}
    modes: dict[str, int] = {}
    containers = {str(c.get("name")): c for c in (pod.get("spec") or {}).get("containers") or []}
    for item in source.get("items") or []:
        path = str(item["path"])
        if "fieldRef" in item:
            value = field_ref_value(pod, str(item["fieldRef"]["fieldPath"]), pod_ip=lookups.env.pod_ip)
        elif "resourceFieldRef" in item:
            ref = item["resourceFieldRef"]
            container = containers.get(str(ref.get("containerName", "")), {})
            value = resource_field_value(container, ref, allocatable=lookups.env.allocatable)
        else:
            continue
        files[path] = value.encode()
        modes[path] = int(item.get("mode", source.get("defaultMode", default_mode)))
    return files, modes


def claim_path(claim_name: str, *, namespace: str, lookups: VolumeLookups) -> str:
    """The local directory behind a PersistentVolumeClaim (bound to a local or hostPath PV)."""
    claim = lookups.claims(claim_name)
    if claim is None:
        raise VolumeNotReady(f'persistentvolumeclaim "{claim_name}" not found in namespace {namespace}')
    phase = (claim.get("status") or {}).get("phase")
    volume_name = (claim.get("spec") or {}).get("volumeName")
    if phase != "Bound" or not volume_name:
        raise VolumeNotReady(
            f'persistentvolumeclaim "{claim_name}" is not bound (phase {phase or "Pending"}); '
            f"the local node needs it bound to a PersistentVolume with spec.local.path or spec.hostPath.path"
        )
    volume = lookups.volumes(str(volume_name))
    if volume is None:
        raise VolumeNotReady(f'persistentvolume "{volume_name}" (bound to claim "{claim_name}") not found')
    spec = volume.get("spec") or {}
    if (spec.get("local") or {}).get("path"):
        path = str(spec["local"]["path"])
        if not os.path.isdir(path):
            raise ContainerConfigError(
                f'persistentvolume "{volume_name}": local path {path} does not exist on this machine'
            )
        return path
    if (spec.get("hostPath") or {}).get("path"):
        path = str(spec["hostPath"]["path"])
        os.makedirs(path, exist_ok=True)
        return path
    raise ContainerConfigError(
        f'persistentvolume "{volume_name}" is neither a local nor a hostPath volume; '
        f"the local node can only use those"
    )


SUPPORTED_VOLUMES = (
    "emptyDir",
    "configMap",
    "secret",
    "downwardAPI",
    "projected",
    "persistentVolumeClaim",
    "hostPath",
)


def prepare_volumes(pod: Mapping[str, Any], volumes_dir: Path, lookups: VolumeLookups) -> dict[str, str]:
    """Create or fill each volume's local directory; returns volume name → local path."""
    namespace = str((pod.get("metadata") or {}).get("namespace") or "default")
    result: dict[str, str] = {}
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        name = str(volume["name"])
        local = volumes_dir / name
        if "emptyDir" in volume:
            local.mkdir(parents=True, exist_ok=True)
        elif "configMap" in volume or "secret" in volume:
            secret = "secret" in volume
            files, modes = _keyed_source(
                volume["secret" if secret else "configMap"],
                secret=secret,
                lookups=lookups,
                namespace=namespace,
                default_mode=0o644,
            )
            _write_files(local, files, modes)
        elif "downwardAPI" in volume:
            _write_files(
                local, *_downward_files(pod, volume["downwardAPI"], lookups=lookups, default_mode=0o644)
            )
        elif "projected" in volume:
            _write_files(
                local, *_projected_files(pod, volume["projected"], lookups=lookups, namespace=namespace)
            )
        elif "persistentVolumeClaim" in volume:
            result[name] = claim_path(
                str(volume["persistentVolumeClaim"]["claimName"]), namespace=namespace, lookups=lookups
            )
            continue
        elif "hostPath" in volume:
            path = str(volume["hostPath"]["path"])
            if volume["hostPath"].get("type") in ("DirectoryOrCreate", None, ""):
                os.makedirs(path, exist_ok=True)
            result[name] = path
            continue
        else:
            kind = next((k for k in volume if k != "name"), "unknown")
            raise ContainerConfigError(
                f'volume "{name}": {kind} volumes are not supported by the local node '
                f"(supported: {', '.join(SUPPORTED_VOLUMES)})"
            )
        result[name] = str(local)
    return result


def _projected_files(
    pod: Mapping[str, Any], projected: Mapping[str, Any], *, lookups: VolumeLookups, namespace: str
) -> tuple[dict[str, bytes], dict[str, int]]:
    """configMap, secret and downwardAPI sources; a serviceAccountToken source is left empty
    (workloads here talk to no API server) and clusterTrustBundle is not supported."""
    default_mode = int(projected.get("defaultMode", 0o644))
    files: dict[str, bytes] = {}
    modes: dict[str, int] = {}
    for source in projected.get("sources") or []:
        if "configMap" in source or "secret" in source:
            secret = "secret" in source
            more = _keyed_source(
                source["secret" if secret else "configMap"],
                secret=secret,
                lookups=lookups,
                namespace=namespace,
                default_mode=default_mode,
            )
        elif "downwardAPI" in source:
            more = _downward_files(pod, source["downwardAPI"], lookups=lookups, default_mode=default_mode)
        else:
            continue
        files.update(more[0])
        modes.update(more[1])
    return files, modes
