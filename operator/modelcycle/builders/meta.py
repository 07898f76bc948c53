"""Names, labels and owner references shared by every child the operator creates."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from modelcycle import GROUP

MAX_NAME = 63
MANAGED_BY = "app.kubernetes.io/managed-by"
PART_OF = "app.kubernetes.io/part-of"
COMPONENT = "app.kubernetes.io/component"
OWNER = f"{GROUP}/owner"
OWNER_KIND = f"{GROUP}/owner-kind"
MODEL = f"{GROUP}/model"
VERSION = f"{GROUP}/version"
TRIGGER = f"{GROUP}/trigger"
SOURCE_RUN = f"{GROUP}/source-run"
MONITOR = f"{GROUP}/monitor"


def short_hash(*parts: object, length: int = 8) -> str:
    return hashlib.sha256("\x00".join(str(p) for p in parts).encode()).hexdigest()[:length]


def child_name(parent: str, suffix: str, *, max_length: int = MAX_NAME) -> str:
    """`<parent>-<suffix>`, trimmed to max_length with a hash of the full name when too long."""
    full = f"{parent}-{suffix}" if suffix else parent
    if len(full) <= max_length:
        return full
    digest = short_hash(full)
    keep = max_length - len(digest) - len(suffix) - 2
    return (
        f"{parent[:keep].rstrip('-.')}-{digest}-{suffix}"
        if keep > 0
        else f"{full[: max_length - 9]}-{digest}"
    )


def label_value(value: str) -> str:
    """A valid label value (<= 63 chars, alphanumeric at both ends) that identifies `value`."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", value).strip("-._")
    if len(cleaned) <= MAX_NAME and cleaned == value:
        return cleaned
    return f"{cleaned[:54].strip('-._')}-{short_hash(value)}"


def owner_labels(parent: dict[str, Any], *, component: str) -> dict[str, str]:
    return {
        MANAGED_BY: "modelcycle",
        PART_OF: "modelcycle",
        COMPONENT: component,
        OWNER: label_value(parent["metadata"]["name"]),
        OWNER_KIND: parent["kind"],
    }


def owner_reference(parent: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": parent["apiVersion"],
        "kind": parent["kind"],
        "name": parent["metadata"]["name"],
        "uid": parent["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_metadata(
    parent: dict[str, Any], *, name: str, component: str, extra_labels: dict[str, str] | None = None
) -> dict[str, Any]:
    """Metadata of a disposable child: deterministic name, owner labels, controller ownerReference."""
    return {
        "name": name,
        "namespace": parent["metadata"]["namespace"],
        "labels": {**owner_labels(parent, component=component), **(extra_labels or {})},
        "ownerReferences": [owner_reference(parent)],
    }
