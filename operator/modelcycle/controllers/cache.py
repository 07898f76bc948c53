"""Watch-fed caches: reconciles read the objects the watches already delivered instead of GETs and LISTs.

The operator's watches (kopf) deliver every object of the five kinds and every Job and Deployment
carrying the `modelcycle.io/owner-kind` label. `Store` keeps the latest of each, by kind, namespace
and name; deletions drop them. The operator's own writes go in too (a created Job, a patched
status), so the next reconcile reads its own writes even before their watch event arrives: the
newer resourceVersion wins.

A kind is `synced` once the store was filled by one LIST at start-up; until then, and for kinds it
does not hold, `Reads` asks the API server. A cached child that is missing is treated as absent:
creating it then answers 409 when it does exist, and the controller adopts it (`ensure_child`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

from modelcycle.controllers import kube


def _revision(obj: dict[str, Any]) -> int | None:
    try:
        return int(obj["metadata"].get("resourceVersion") or "")
    except ValueError:
        return None


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
        self._objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
        self._synced: set[str] = set()

    def __len__(self) -> int:
        with self._lock:
            return sum(len(items) for items in self._objects.values())

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
        with self._lock:
            items = self._objects.setdefault(obj["kind"], {})
            held = items.get(key)
            if held is not None and held["metadata"].get("uid") == metadata.get("uid"):
                new, old = _revision(obj), _revision(held)
                if new is not None and old is not None and new < old:
                    return
            items[key] = obj

    def delete(self, obj: dict[str, Any]) -> None:
        metadata = obj.get("metadata") or {}
        with self._lock:
            items = self._objects.get(obj.get("kind") or "")
            if items is None:
                return
            held = items.get((metadata.get("namespace") or "", metadata.get("name") or ""))
            if held is not None and held["metadata"].get("uid") == metadata.get("uid"):
                del items[(metadata.get("namespace") or "", metadata["name"])]
                if not items:
                    del self._objects[obj["kind"]]

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            return (self._objects.get(kind) or {}).get((namespace, name))

    def list(
        self, kind: str, namespace: str, labels: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        wanted = dict(labels or {}).items()
        with self._lock:
            items = list((self._objects.get(kind) or {}).items())
        return [
            obj
            for (obj_namespace, _), obj in items
            if obj_namespace == namespace and wanted <= (obj["metadata"].get("labels") or {}).items()
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
            self.store.put(obj)
