"""Defense in depth: the names and paths a workload uses, checked again inside the workload.

The API server already refuses them (api/common.py), but a workload may be run by hand or given a
spec that never went through it. Each refusal is an `InvalidSpec` (exit code 2) that names the
field, and a path is resolved (symlinks followed) and must stay under its root.
"""

from __future__ import annotations

import re
from pathlib import Path

from modelcycle.api import common
from modelcycle.workloads.results import InvalidSpec

_SUBDOMAIN = re.compile(common.DNS_SUBDOMAIN)
_LABEL = re.compile(common.DNS_LABEL)
_RELATIVE = re.compile(common.RELATIVE_PATH)
_ARTIFACT_URI = re.compile(common.ARTIFACT_URI)


def _matching(value: object, field: str, pattern: re.Pattern[str], limit: int, expected: str) -> str:
    if not isinstance(value, str) or not value or len(value) > limit or not pattern.match(value):
        raise InvalidSpec(f"{field}: {value!r} {expected} (at most {limit} characters)")
    return value


def name(value: object, field: str, *, label: bool = False) -> str:
    """value if it is a Kubernetes name (a DNS-1123 subdomain, or a label with label=True)."""
    if label:
        expected = (
            "is not a Kubernetes name: it must be a DNS-1123 label of lowercase letters, digits and '-'"
        )
        return _matching(value, field, _LABEL, common.MAX_LABEL, expected)
    expected = (
        "is not a Kubernetes name: it must be a DNS-1123 subdomain of lowercase letters, digits and '-' "
        "('.' between labels)"
    )
    return _matching(value, field, _SUBDOMAIN, common.MAX_NAME, expected)


def relative_path(value: object, field: str) -> str:
    """value if it is a relative path without an empty, `.` or `..` segment."""
    expected = "must be a relative path inside its volume (no leading '/', no empty, '.' or '..' segment)"
    return _matching(value, field, _RELATIVE, common.MAX_PATH, expected)


def artifact_uri(value: object, field: str) -> str:
    """value if it is a pvc://, s3:// or file:/// URI without an empty, `.` or `..` segment."""
    expected = (
        "must be a pvc://<path>, s3://<bucket>/<key> or file:///<path> URI with no empty, '.' or '..' segment"
    )
    return _matching(value, field, _ARTIFACT_URI, common.MAX_URI, expected)


def under(root: str | Path, *parts: str, field: str) -> Path:
    """root/parts resolved (symlinks followed); refused unless it stays strictly under root."""
    resolved_root = Path(root).resolve()
    resolved = resolved_root.joinpath(*parts).resolve()
    if resolved_root not in resolved.parents:
        raise InvalidSpec(f"{field}: {'/'.join(parts)!r} leaves its root {root}")
    return resolved
