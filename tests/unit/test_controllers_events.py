"""Every Event the operator records is also one line of its log, warnings as warnings."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from modelcycle.controllers import kube, runtime

OBJ = {
    "apiVersion": "modelcycle.io/v1alpha1",
    "kind": "Dataset",
    "metadata": {"name": "iris", "namespace": "ml", "uid": "u-1", "resourceVersion": "7"},
}


class RecordingClient:
    def __init__(self, error: kube.ApiError | None = None) -> None:
        self.created: list[dict[str, Any]] = []
        self.error = error

    def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        if self.error is not None:
            raise self.error
        self.created.append(manifest)
        return manifest


@pytest.mark.parametrize(
    ("event_type", "level"),
    [("Normal", logging.INFO), ("Warning", logging.WARNING)],
    ids=["normal", "warning"],
)
def test_event_is_recorded_and_logged_at_its_level(
    caplog: pytest.LogCaptureFixture, event_type: str, level: int
) -> None:
    client = RecordingClient()
    with caplog.at_level(logging.INFO, logger="modelcycle.operator"):
        runtime.emit_event(client, OBJ, runtime.Event("SnapshotReady", "150 rows", event_type))  # type: ignore[arg-type]
    (event,) = client.created
    assert (event["reason"], event["type"], event["involvedObject"]["uid"]) == (
        "SnapshotReady",
        event_type,
        "u-1",
    )
    (record,) = caplog.records
    assert record.levelno == level
    assert record.getMessage() == "Dataset ml/iris: SnapshotReady: 150 rows"


def test_event_the_api_refuses_is_still_logged_and_never_raised(caplog: pytest.LogCaptureFixture) -> None:
    client = RecordingClient(kube.ApiError(403, "Forbidden", '{"message": "events is forbidden"}'))
    with caplog.at_level(logging.INFO, logger="modelcycle.operator"):
        runtime.emit_event(client, OBJ, runtime.Event("Validated", "ok"))  # type: ignore[arg-type]
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "Dataset ml/iris: Validated: ok"
    assert "could not record event Validated on ml/iris" in messages[1]
