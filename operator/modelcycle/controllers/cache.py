"""Watch-fed caches: reconciles read the objects the watches already delivered instead of GETs and LISTs.

The operator's watches (kopf) deliver every object of the five kinds and every Job and Deployment
carrying the `modelcycle.io/owner-kind` label. `Store` keeps the latest of each, by kind, namespace
and name; deletions drop them. The operator's own writes go in too (a created Job, a patched
status), so the next reconcile reads its own writes even before their watch event arrives: the
newer resourceVersion wins.

Each object is held as one block of compact JSON, without `metadata.managedFields` (no controller
reads them), beside its uid, resourceVersion and labels; a read decodes a fresh copy, which the
reconcile may change freely. As a tree of small Python objects a Job costs several times its JSON,
and after a burst the freed small objects stay scattered over CPython's arenas, so the operator's
RSS would not come down when the objects are deleted; one block each goes back to the allocator
whole (`controllers.memory` then returns it to the system).

The store also knows the operator's own last write of each object, so that the watch event which
merely brings that write back (its "echo") starts no reconcile.

A kind is `synced` once the store was filled by one LIST at start-up; until then, and for kinds it
does not hold, `Reads` asks the API server. A cached child that is missing is treated as absent:
creating it then answers 409 when it does exist, and the controller adopts it (`ensure_child`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from modelcycle.controllers import kube


def _revision(obj: dict[str, Any]) -> int | None:
    try:
        return int(obj["metadata"].get("resourceVersion") or "")
    except ValueError:
        return None


def _compare(a: str | None, b: str | None) -> int | None:
    """-1, 0 or 1 as resourceVersion a is older than, equal to or newer than b; None if unknown."""
    try:
        x, y = int(a or ""), int(b or "")
    except ValueError:
        return None
    return (x > y) - (x < y)


def _slim(obj: dict[str, Any]) -> dict[str, Any]:
    metadata = obj.get("metadata") or {}
    if "managedFields" not in metadata:
        return obj
    return {**obj, "metadata": {k: v for k, v in metadata.items() if k != "managedFields"}}


@dataclass(frozen=True, slots=True)
class _Held:
    uid: str | None
    revision: int | None
    labels: dict[str, str]
    data: bytes

    @classmethod
    def of(cls, obj: dict[str, Any]) -> _Held:
        metadata = obj["metadata"]
        data = json.dumps(_slim(obj), separators=(",", ":"), ensure_ascii=False).encode()
        return cls(metadata.get("uid"), _revision(obj), dict(metadata.get("labels") or {}), data)

    def decode(self) -> dict[str, Any]:
        return dict(json.loads(self.data))


def parse_selector(selector: str | None) -> dict[str, str]:
    """`a=b,c=d` (equality terms only, as the controllers write them)."""
    labels: dict[str, str] = {}
    for term in (selector or "").split(","):
        if term.strip():
            key, _, value = term.partition("=")
            labels[key.strip()] = value.strip()
    return labels


class Store:
    """The latest version of each watched object, thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._objects: dict[str, dict[tuple[str, str], _Held]] = {}
        self._synced: set[str] = set()
        self._written: dict[tuple[str, str, str], str] = {}
        """(kind, namespace, name) -> resourceVersion of the operator's last write not yet echoed."""

    def __len__(self) -> int:
        """Objects held, and own writes not yet echoed (both must go with the objects)."""
        with self._lock:
            return sum(len(items) for items in self._objects.values()) + len(self._written)

    def synced(self, kind: str) -> bool:
        return kind in self._synced

    def fill(self, kind: str, items: Iterable[dict[str, Any]]) -> None:
        """The result of a LIST of the whole kind: from now on the store answers for it."""
        for obj in items:
            self.put({**obj, "kind": kind})
        self._synced.add(kind)

    def put(self, obj: dict[str, Any]) -> None:
        """Keep `obj` unless a newer version of it is held already."""
        metadata = obj.get("metadata") or {}
        if not obj.get("kind") or not metadata.get("name"):
            return
        key = (metadata.get("namespace") or "", metadata["name"])
        new = _Held.of(obj)
        with self._lock:
            items = self._objects.setdefault(obj["kind"], {})
            held = items.get(key)
            older = (
                held is not None
                and held.uid == new.uid
                and new.revision is not None
                and held.revision is not None
                and new.revision < held.revision
            )
            if not older:
                items[key] = new

    def wrote(self, obj: dict[str, Any]) -> None:
        """The operator's own write of `obj` (as the API server answered it): kept, and its watch
        event will be recognised as an echo (`is_echo`)."""
        metadata = obj.get("metadata") or {}
        if obj.get("kind") and metadata.get("name") and metadata.get("resourceVersion"):
            with self._lock:
                key = (obj["kind"], metadata.get("namespace") or "", metadata["name"])
                self._written[key] = metadata["resourceVersion"]
        self.put(obj)

    def is_echo(self, kind: str, obj: dict[str, Any]) -> bool:
        """Whether this watch event of `obj` only brings back the operator's own last write of it.

        An older event leaves that write expected; the echo itself or anything newer ends the wait."""
        metadata = obj.get("metadata") or {}
        key = (kind, metadata.get("namespace") or "", metadata.get("name") or "")
        with self._lock:
            written = self._written.get(key)
            if written is None:
                return False
            order = _compare(metadata.get("resourceVersion"), written)
            if order == -1:
                return False
            del self._written[key]
            return order == 0

    def delete(self, obj: dict[str, Any]) -> None:
        metadata = obj.get("metadata") or {}
        kind = obj.get("kind") or ""
        key = (metadata.get("namespace") or "", metadata.get("name") or "")
        with self._lock:
            self._written.pop((kind, *key), None)
            items = self._objects.get(kind)
            if items is None:
                return
            held = items.get(key)
            if held is not None and held.uid == metadata.get("uid"):
                del items[key]
                if not items:
                    del self._objects[kind]

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            held = (self._objects.get(kind) or {}).get((namespace, name))
        return None if held is None else held.decode()

    def list(
        self, kind: str, namespace: str, labels: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        wanted = dict(labels or {}).items()
        with self._lock:
            items = list((self._objects.get(kind) or {}).items())
        return [
            held.decode()
            for (held_namespace, _), held in items
            if held_namespace == namespace and wanted <= held.labels.items()
        ]


class Reads:
    """`get_or_none` and `list` from the store for the kinds it holds, else from the API server."""

    def __init__(self, client: kube.Client, store: Store | None = None) -> None:
        self.client = client
        self.store = store

    def get_or_none(self, *, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        if self.store is not None and self.store.synced(kind):
            return self.store.get(kind, namespace, name)
        return self.client.get_or_none(kind=kind, namespace=namespace, name=name)

    def list(self, *, kind: str, namespace: str, label_selector: str | None = None) -> list[dict[str, Any]]:
        if self.store is not None and self.store.synced(kind):
            return self.store.list(kind, namespace, parse_selector(label_selector))
        return self.client.list(kind=kind, namespace=namespace, label_selector=label_selector)

    def remember(self, obj: dict[str, Any] | None) -> None:
        """One of the operator's own writes, as the API server answered it."""
        if self.store is not None and obj and self.store.synced(obj.get("kind") or ""):
            self.store.wrote(obj)
