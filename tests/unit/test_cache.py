"""The watch-fed store: newest version wins, deletes by uid, label queries, and reads that fall back."""

from __future__ import annotations

from typing import Any

import pytest

from modelcycle.controllers import cache


def job(name: str, *, rv: str, uid: str = "u1", **labels: str) -> dict[str, Any]:
    return {
        "kind": "Job",
        "metadata": {"name": name, "namespace": "ml", "uid": uid, "resourceVersion": rv, "labels": labels},
    }


def test_an_older_version_never_replaces_a_newer_one() -> None:
    store = cache.Store()
    store.put(job("a-train", rv="10"))
    store.put(job("a-train", rv="9"))  # a late watch event after the operator's own write
    assert store.get("Job", "ml", "a-train")["metadata"]["resourceVersion"] == "10"  # type: ignore[index]
    store.put(job("a-train", rv="11"))
    assert store.get("Job", "ml", "a-train")["metadata"]["resourceVersion"] == "11"  # type: ignore[index]


def test_a_recreated_object_replaces_the_old_one_whatever_its_version() -> None:
    store = cache.Store()
    store.put(job("a-train", rv="10", uid="old"))
    store.put(job("a-train", rv="3", uid="new"))
    assert store.get("Job", "ml", "a-train")["metadata"]["uid"] == "new"  # type: ignore[index]


def test_delete_drops_only_the_object_of_that_uid_and_leaves_nothing_behind() -> None:
    store = cache.Store()
    store.put(job("a-train", rv="3", uid="new"))
    store.delete(job("a-train", rv="2", uid="old"))  # the delete of an earlier object of the name
    assert store.get("Job", "ml", "a-train") is not None
    store.delete(job("a-train", rv="4", uid="new"))
    assert store.get("Job", "ml", "a-train") is None
    assert len(store) == 0


def test_list_by_namespace_and_labels() -> None:
    store = cache.Store()
    store.put(job("a", rv="1", **{"modelcycle.io/owner": "a"}))
    store.put(job("b", rv="1", **{"modelcycle.io/owner": "b"}))
    other = job("c", rv="1", **{"modelcycle.io/owner": "a"})
    other["metadata"]["namespace"] = "other"
    store.put(other)
    found = store.list("Job", "ml", cache.parse_selector("modelcycle.io/owner=a"))
    assert [j["metadata"]["name"] for j in found] == ["a"]
    assert {j["metadata"]["name"] for j in store.list("Job", "ml")} == {"a", "b"}


class CountingClient:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def get_or_none(self, *, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(f"GET {kind}/{name}")
        return None

    def list(self, *, kind: str, namespace: str, label_selector: str | None = None) -> list[dict[str, Any]]:
        self.calls.append(f"LIST {kind}")
        return []


def test_reads_use_the_store_for_synced_kinds_and_the_api_server_for_the_rest() -> None:
    client = CountingClient()
    store = cache.Store()
    store.fill("Job", [{"metadata": {"name": "a-train", "namespace": "ml", "uid": "u1"}}])
    reads = cache.Reads(client, store)  # type: ignore[arg-type]
    assert reads.get_or_none(kind="Job", namespace="ml", name="a-train") is not None
    assert reads.get_or_none(kind="Job", namespace="ml", name="missing") is None  # absent, not asked
    assert reads.list(kind="Job", namespace="ml") != []
    assert client.calls == []
    reads.get_or_none(kind="Service", namespace="ml", name="iris")
    reads.list(kind="Pod", namespace="ml", label_selector="a=b")
    assert client.calls == ["GET Service/iris", "LIST Pod"]


def test_own_writes_are_remembered_only_for_synced_kinds() -> None:
    store = cache.Store()
    store.fill("Job", [])
    reads = cache.Reads(CountingClient(), store)  # type: ignore[arg-type]
    reads.remember(job("a-train", rv="5"))
    reads.remember({"kind": "Service", "metadata": {"name": "iris", "namespace": "ml", "uid": "s"}})
    assert store.get("Job", "ml", "a-train") is not None
    assert store.get("Service", "ml", "iris") is None


@pytest.mark.parametrize(
    ("events", "echoes"),
    [
        pytest.param(["5"], [True], id="the-echo-itself"),
        pytest.param(["5", "5"], [True, False], id="only-once"),
        pytest.param(["4", "5"], [False, True], id="an-older-event-first"),
        pytest.param(["6", "5"], [False, False], id="a-newer-event-ends-the-wait"),
    ],
)
def test_the_watch_event_of_an_own_write_is_its_echo(events: list[str], echoes: list[bool]) -> None:
    store = cache.Store()
    store.fill("Job", [])
    store.wrote(job("a-train", rv="5"))
    assert [store.is_echo("Job", job("a-train", rv=rv)) for rv in events] == echoes


def test_an_event_of_an_object_never_written_is_no_echo() -> None:
    store = cache.Store()
    store.put(job("a-train", rv="5"))  # from a watch, not written
    assert not store.is_echo("Job", job("a-train", rv="5"))


def test_deleting_an_object_forgets_its_own_write() -> None:
    store = cache.Store()
    store.wrote(job("a-train", rv="5"))
    store.delete(job("a-train", rv="6"))
    assert len(store) == 0
    assert not store.is_echo("Job", job("a-train", rv="5"))


def test_objects_are_held_without_managed_fields() -> None:
    store = cache.Store()
    obj = job("a-train", rv="1")
    obj["metadata"]["managedFields"] = [{"manager": "kube-controller-manager", "fieldsV1": {"f:status": {}}}]
    store.put(obj)
    held = store.get("Job", "ml", "a-train")
    assert held is not None and "managedFields" not in held["metadata"]
    assert held["metadata"]["labels"] == obj["metadata"]["labels"]
    assert "managedFields" in obj["metadata"]  # the caller's object is left alone
