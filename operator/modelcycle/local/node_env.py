"""Pure pieces of the local node: what a container's process gets (argv, environment, paths, IP).

Nothing here talks to the API server or starts a process: ConfigMaps and Secrets come in through
lookup callables, so every rule is unit-tested with plain dicts.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

DEFAULT_POD_NETWORK = "127.1.0.0/16"
HOST_IP = "127.0.0.1"
PATH_MAP_ENV = "MODELCYCLE_PATH_MAP"
POD_IP_ENV = "POD_IP"
LOCAL_NODE_ENV = "MODELCYCLE_LOCAL_NODE"

# Looks a ConfigMap or Secret up by name in the pod's namespace: the object, or None if absent.
Lookup = Callable[[str], Mapping[str, Any] | None]


class ContainerConfigError(Exception):
    """The pod references something that is missing or wrong (the kubelet's CreateContainerConfigError)."""

    reason = "CreateContainerConfigError"


class CommandNotFoundError(ContainerConfigError):
    """The container cannot run here: no command, or the command is not installed locally."""

    reason = "CommandNotFound"


# --------------------------------------------------------------------------- quantities


_SUFFIXES: dict[str, Fraction] = {
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 1000),
    "": Fraction(1),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)(?:([eE][+-]?[0-9]+)|([a-zA-Z]*))$")


def parse_quantity(value: str | int | float) -> Fraction:
    """A Kubernetes resource quantity ("100m", "1.5Gi", "2", "1e3") as an exact number."""
    if isinstance(value, int | float):
        return Fraction(value)
    match = _QUANTITY.match(value.strip())
    if not match or (match.group(3) or "") not in _SUFFIXES:
        raise ValueError(f"not a quantity: {value!r}")
    number = Fraction(match.group(1))
    if match.group(2):
        return number * Fraction(10) ** int(match.group(2)[1:])
    return number * _SUFFIXES[match.group(3) or ""]


# --------------------------------------------------------------------------- $(VAR) expansion


def expand(text: str, variables: Mapping[str, str]) -> str:
    """The kubelet's $(VAR) expansion: defined names are replaced, `$$` is a literal `$`,
    undefined references and anything else stay as written."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char == "$" and i + 1 < n:
            following = text[i + 1]
            if following == "$":
                out.append("$")
                i += 2
                continue
            if following == "(":
                end = text.find(")", i + 2)
                if end != -1:
                    name = text[i + 2 : end]
                    out.append(variables[name] if name in variables else text[i : end + 1])
                    i = end + 1
                    continue
        out.append(char)
        i += 1
    return "".join(out)


# --------------------------------------------------------------------------- downward API


_KEYED_FIELD = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


def field_ref_value(pod: Mapping[str, Any], field_path: str, *, pod_ip: str, host_ip: str = HOST_IP) -> str:
    """The value of a downward-API fieldRef, as the kubelet formats it."""
    metadata = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    keyed = _KEYED_FIELD.match(field_path)
    if keyed:
        return str((metadata.get(keyed.group(1)) or {}).get(keyed.group(2), ""))
    if field_path in ("metadata.labels", "metadata.annotations"):
        items = metadata.get(field_path.split(".")[1]) or {}
        return "\n".join(f"{k}={json.dumps(str(v))}" for k, v in sorted(items.items()))
    simple: dict[str, Any] = {
        "metadata.name": metadata.get("name"),
        "metadata.namespace": metadata.get("namespace"),
        "metadata.uid": metadata.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName") or "default",
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
    }
    if field_path not in simple:
        raise ContainerConfigError(f"unsupported fieldRef fieldPath {field_path!r}")
    return str(simple[field_path] or "")


def resource_field_value(
    container: Mapping[str, Any], ref: Mapping[str, Any], *, allocatable: Mapping[str, str]
) -> str:
    """A resourceFieldRef: the container's request or limit (a limit defaults to the node's allocatable)."""
    resource = str(ref.get("resource", ""))
    kind, _, name = resource.partition(".")
    if kind not in ("limits", "requests") or name not in ("cpu", "memory", "ephemeral-storage"):
        raise ContainerConfigError(f"unsupported resourceFieldRef resource {resource!r}")
    resources = container.get("resources") or {}
    value = (resources.get(kind) or {}).get(name)
    if value is None and kind == "requests":
        value = (resources.get("limits") or {}).get(name)
    if value is None:
        value = allocatable.get(name, "0") if kind == "limits" else "0"
    divisor = parse_quantity(str(ref.get("divisor") or "1"))
    if divisor <= 0:
        raise ContainerConfigError(f"resourceFieldRef divisor must be positive, got {ref.get('divisor')!r}")
    return str(math.ceil(parse_quantity(str(value)) / divisor))


# --------------------------------------------------------------------------- ConfigMaps and Secrets


def _object_data(obj: Mapping[str, Any], *, secret: bool) -> dict[str, bytes]:
    """Every key of a ConfigMap (data + binaryData) or Secret (data, base64; stringData is write-only)."""
    data: dict[str, bytes] = {}
    if secret:
        for key, value in (obj.get("data") or {}).items():
            data[key] = base64.b64decode(value or "")
        for key, value in (obj.get("stringData") or {}).items():
            data[key] = str(value).encode()
        return data
    for key, value in (obj.get("binaryData") or {}).items():
        data[key] = base64.b64decode(value or "")
    for key, value in (obj.get("data") or {}).items():
        data[key] = str(value).encode()
    return data


def object_data(
    lookup: Lookup, name: str, *, secret: bool, optional: bool, namespace: str
) -> dict[str, bytes] | None:
    """The keys of a ConfigMap or Secret; None when it is absent and optional."""
    kind = "secret" if secret else "configmap"
    obj = lookup(name)
    if obj is None:
        if optional:
            return None
        raise ContainerConfigError(f'{kind} "{name}" not found')
    return _object_data(obj, secret=secret)


_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


def _decode(value: bytes) -> str:
    return value.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class EnvContext:
    """What env resolution needs besides the pod: lookups and the node's view."""

    pod_ip: str
    configmaps: Lookup
    secrets: Lookup
    host_ip: str = HOST_IP
    allocatable: Mapping[str, str] = field(default_factory=dict)


def resolve_env(pod: Mapping[str, Any], container: Mapping[str, Any], ctx: EnvContext) -> dict[str, str]:
    """The container's environment as the kubelet builds it: envFrom first, then env in order,
    each `value` $(VAR)-expanded against what is defined so far; later names win."""
    namespace = str((pod.get("metadata") or {}).get("namespace") or "default")
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = str(source.get("prefix") or "")
        for key_name, secret in (("configMapRef", False), ("secretRef", True)):
            ref = source.get(key_name)
            if not ref:
                continue
            data = object_data(
                ctx.secrets if secret else ctx.configmaps,
                str(ref.get("name", "")),
                secret=secret,
                optional=bool(ref.get("optional")),
                namespace=namespace,
            )
            for key, value in (data or {}).items():
                if _ENV_NAME.match(prefix + key):  # the kubelet skips invalid names (with an event)
                    env[prefix + key] = _decode(value)
    for item in container.get("env") or []:
        name = str(item["name"])
        if "valueFrom" not in item or item.get("value"):
            env[name] = expand(str(item.get("value") or ""), env)
            continue
        env[name] = _value_from(pod, container, item["valueFrom"], ctx, namespace=namespace)
    return env


def _value_from(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    source: Mapping[str, Any],
    ctx: EnvContext,
    *,
    namespace: str,
) -> str:
    if "fieldRef" in source:
        return field_ref_value(
            pod, str(source["fieldRef"]["fieldPath"]), pod_ip=ctx.pod_ip, host_ip=ctx.host_ip
        )
    if "resourceFieldRef" in source:
        return resource_field_value(container, source["resourceFieldRef"], allocatable=ctx.allocatable)
    for key_name, secret in (("configMapKeyRef", False), ("secretKeyRef", True)):
        ref = source.get(key_name)
        if not ref:
            continue
        name, key, optional = str(ref.get("name", "")), str(ref.get("key", "")), bool(ref.get("optional"))
        data = object_data(
            ctx.secrets if secret else ctx.configmaps,
            name,
            secret=secret,
            optional=optional,
            namespace=namespace,
        )
        if data is None:
            return ""
        if key not in data:
            if optional:
                return ""
            kind = "Secret" if secret else "ConfigMap"
            raise ContainerConfigError(f"couldn't find key {key} in {kind} {namespace}/{name}")
        return _decode(data[key])
    raise ContainerConfigError(f"unsupported env valueFrom {sorted(source)}")


# --------------------------------------------------------------------------- path mapping


_AFTER = r"(?=$|[/\s:;,'\"=)\]}])"
_BEFORE = r"(?<![\w.~/$-])"


@dataclass(frozen=True)
class PathMap:
    """Container paths (volume mountPaths, the termination-message path) → local paths.

    `rewrite` replaces each mapped path where it stands as a whole path prefix: at the start of
    the text or after a character that cannot be part of a path (space, `=`, `:`, `,`, quotes,
    brackets), and followed by the end, `/`, or such a character. The longest path wins, so
    `/data/cache` maps before `/data`. `s3://b/artifacts` or `/x/artifacts` are left alone.
    """

    mapping: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, str]]) -> PathMap:
        cleaned: dict[str, str] = {}
        for container_path, local_path in pairs:
            normalized = os.path.normpath(container_path) if container_path else ""
            if not normalized.startswith("/") or normalized == "/":
                continue  # only absolute paths below the root can be remapped
            cleaned[normalized] = str(local_path)
        ordered = sorted(cleaned.items(), key=lambda kv: (-len(kv[0]), kv[0]))
        return cls(tuple(ordered))

    def _pattern(self) -> re.Pattern[str] | None:
        if not self.mapping:
            return None
        alternatives = "|".join(re.escape(p) for p, _ in self.mapping)
        return re.compile(f"{_BEFORE}({alternatives}){_AFTER}")

    def rewrite(self, text: str) -> str:
        pattern = self._pattern()
        if pattern is None or "/" not in text:
            return text
        lookup = dict(self.mapping)
        return pattern.sub(lambda m: lookup[m.group(1)], text)

    def local(self, container_path: str) -> str | None:
        """The local path of a container path below a mapped one, or None if it is not mapped."""
        normalized = os.path.normpath(container_path)
        for prefix, local in self.mapping:
            if normalized == prefix:
                return local
            if normalized.startswith(prefix + "/"):
                return local + normalized[len(prefix) :]
        return None

    def as_json(self) -> str:
        return json.dumps(dict(self.mapping), sort_keys=True)


_WILDCARD = re.compile(r"^(?P<pre>(?:[^=]*=)?)(?:0\.0\.0\.0|\[::\]|::)(?P<port>:\d+)?$")


def rewrite_wildcard_host(text: str, pod_ip: str) -> str:
    """`0.0.0.0`, `::`, `[::]` (alone, after `=`, or with `:PORT`) become the pod's IP.

    Every pod shares the machine's network, so a replica listening on all addresses would take
    the port from every other replica; pointed at its own loopback address, each can listen.
    """
    match = _WILDCARD.match(text)
    if not match:
        return text
    if match.group("port") and text[len(match.group("pre")) :].startswith("::"):
        return text  # `:::8080` is ambiguous; leave it
    return f"{match.group('pre')}{pod_ip}{match.group('port') or ''}"


def with_serve_host(argv: Sequence[str], pod_ip: str) -> list[str]:
    """`modelcycle serve` without `--host` listens on 0.0.0.0: give it the pod's address."""
    args = list(argv)
    if len(args) < 2 or os.path.basename(args[0]) != "modelcycle" or args[1] != "serve":
        return args
    if any(a == "--host" or a.startswith("--host=") for a in args[2:]):
        return args
    return [*args, "--host", pod_ip]


# --------------------------------------------------------------------------- pod IPs


def _host_addresses(network: ipaddress.IPv4Network) -> int:
    return int(network.num_addresses)


def candidate_ips(uid: str, network: str = DEFAULT_POD_NETWORK) -> Iterator[str]:
    """Addresses for a pod in allocation order: a start derived from the uid, then onwards.

    Addresses whose last octet is 0 or 255 are skipped (they look like network/broadcast).
    """
    net = ipaddress.ip_network(network)
    if not isinstance(net, ipaddress.IPv4Network) or not net.subnet_of(ipaddress.IPv4Network("127.0.0.0/8")):
        raise ValueError(f"the pod network must be an IPv4 loopback range inside 127.0.0.0/8, got {network}")
    size = _host_addresses(net)
    start = int(hashlib.sha256(uid.encode()).hexdigest()[:12], 16) % size
    base = int(net.network_address)
    for step in range(size):
        address = ipaddress.IPv4Address(base + (start + step) % size)
        if address.packed[-1] in (0, 255):
            continue
        yield str(address)


def allocate_ip(uid: str, taken: Iterable[str], network: str = DEFAULT_POD_NETWORK) -> str:
    """A free loopback address for the pod, stable for its uid as long as nothing else holds it."""
    used = set(taken)
    for candidate in candidate_ips(uid, network):
        if candidate not in used:
            return candidate
    raise RuntimeError(f"no free address left in {network}")


# --------------------------------------------------------------------------- commands


def executable_search_path(container_path_env: str | None, *, bin_dir: str, default_path: str) -> str:
    """PATH for a container: the agent's own bin directory (its venv) first, then the container's
    PATH if it sets one, else the agent's."""
    rest = [p for p in (container_path_env or default_path).split(os.pathsep) if p and p != bin_dir]
    return os.pathsep.join([bin_dir, *rest])


def resolve_executable(name: str, *, search_path: str, cwd: str) -> str | None:
    """The absolute path `name` runs as (like execvp), or None if there is no such executable."""

    def executable(path: str) -> bool:
        return os.path.isfile(path) and os.access(path, os.X_OK)

    if "/" in name:
        path = os.path.normpath(name if os.path.isabs(name) else os.path.join(cwd, name))
        return path if executable(path) else None
    for directory in search_path.split(os.pathsep):
        if directory and executable(os.path.join(directory, name)):
            return os.path.join(directory, name)
    return None


# --------------------------------------------------------------------------- the whole launch


@dataclass(frozen=True)
class LaunchPlan:
    """Everything needed to start one container's process."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: str
    termination_log: str
    path_map: PathMap


BASE_ENV_PASSTHROUGH: tuple[str, ...] = ("LANG", "LC_ALL", "LC_CTYPE", "TZ", "SSL_CERT_FILE", "SSL_CERT_DIR")


def base_environment(host_env: Mapping[str, str], *, node_name: str) -> dict[str, str]:
    """What every local container starts from, before the pod's own environment."""
    env = {k: host_env[k] for k in BASE_ENV_PASSTHROUGH if k in host_env}
    env["PYTHONUNBUFFERED"] = "1"  # logs go to files: without this Python holds output back
    env[LOCAL_NODE_ENV] = node_name
    return env


def container_mount_pairs(
    container: Mapping[str, Any], volume_dirs: Mapping[str, str], env: Mapping[str, str]
) -> list[tuple[str, str]]:
    """(mountPath, local path) of each volumeMount; subPath / subPathExpr join the volume's dir."""
    pairs: list[tuple[str, str]] = []
    for mount in container.get("volumeMounts") or []:
        name = str(mount.get("name", ""))
        if name not in volume_dirs:
            raise ContainerConfigError(f'volumeMount "{name}" names no volume of the pod')
        local = volume_dirs[name]
        sub = str(mount.get("subPath") or "") or expand(str(mount.get("subPathExpr") or ""), env)
        if sub:
            if os.path.isabs(sub) or ".." in Path(sub).parts:
                raise ContainerConfigError(f'subPath "{sub}" must be a relative path without ".."')
            local = os.path.join(local, sub)
        pairs.append((str(mount.get("mountPath", "")), local))
    return pairs


def plan_container(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    *,
    ctx: EnvContext,
    volume_dirs: Mapping[str, str],
    termination_log: str,
    default_cwd: str,
    base_env: Mapping[str, str],
    bin_dir: str,
    host_path: str,
) -> LaunchPlan:
    """argv, environment and working directory of a container, with every rule applied:
    env resolution, $(VAR) expansion of command/args, path remapping, wildcard-host rewriting."""
    spec = pod.get("spec") or {}
    host_network = bool(spec.get("hostNetwork"))
    command = [str(c) for c in container.get("command") or []]
    if not command:
        raise CommandNotFoundError(
            f'container "{container.get("name")}" has no command: the local node runs processes, '
            f"not images, so it cannot use the image's entrypoint; set `command`"
        )
    env = resolve_env(pod, container, ctx)
    pod_env = dict(env)
    pairs = container_mount_pairs(container, volume_dirs, env)
    message_path = str(container.get("terminationMessagePath") or "/dev/termination-log")
    path_map = PathMap.of([*pairs, (message_path, termination_log)])

    def rewrite(value: str) -> str:
        value = path_map.rewrite(value)
        return value if host_network else rewrite_wildcard_host(value, ctx.pod_ip)

    full_env = dict(base_env)
    full_env.update({k: rewrite(v) for k, v in env.items()})
    full_env.setdefault(POD_IP_ENV, ctx.pod_ip)
    full_env.setdefault("HOSTNAME", str((pod.get("metadata") or {}).get("name", "")))
    full_env.setdefault("HOME", default_cwd)
    full_env[PATH_MAP_ENV] = path_map.as_json()
    full_env["PATH"] = executable_search_path(pod_env.get("PATH"), bin_dir=bin_dir, default_path=host_path)

    argv = [rewrite(expand(a, env)) for a in [*command, *(str(a) for a in container.get("args") or [])]]
    if not host_network:
        argv = with_serve_host(argv, ctx.pod_ip)
    working_dir = str(container.get("workingDir") or "")
    cwd = (path_map.local(working_dir) or working_dir) if working_dir else default_cwd
    if not os.path.isdir(cwd):
        raise ContainerConfigError(f'workingDir "{working_dir}" does not exist on this machine ({cwd})')
    executable = resolve_executable(argv[0], search_path=full_env["PATH"], cwd=cwd)
    if executable is None:
        raise CommandNotFoundError(
            f'container "{container.get("name")}": command "{argv[0]}" not found on this machine '
            f"(searched {full_env['PATH']}); the local node runs local commands, not the image"
        )
    argv[0] = executable
    return LaunchPlan(tuple(argv), full_env, cwd, termination_log, path_map)


def probe_command(argv: Sequence[str], plan: LaunchPlan, pod_ip: str) -> list[str]:
    """An exec probe's command with the container's rules applied (path map, $(VAR), host)."""
    return [rewrite_wildcard_host(plan.path_map.rewrite(expand(a, plan.env)), pod_ip) for a in argv]
