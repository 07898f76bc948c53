"""Kubernetes timestamps: RFC 3339 in UTC, to the second."""

from __future__ import annotations

import datetime
import time


def rfc3339(epoch: float) -> str:
    """A Kubernetes timestamp (seconds, UTC) of a Unix time."""
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now() -> str:
    return rfc3339(time.time())


def parse_time(value: str | None) -> datetime.datetime | None:
    """A Kubernetes timestamp; None when absent or malformed."""
    if not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def epoch_of(value: str | None) -> float | None:
    """The Unix time of a Kubernetes timestamp; None when absent or malformed."""
    parsed = parse_time(value)
    return parsed.timestamp() if parsed is not None else None
