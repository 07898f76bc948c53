"""Condition types, reasons and pure helpers for status conditions (metav1.Condition semantics)."""

from __future__ import annotations

from typing import Any

# Condition types.
READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
VALIDATED = "Validated"
SUCCEEDED = "Succeeded"
AVAILABLE = "Available"
DEGRADED = "Degraded"
DRIFT_DETECTED = "DriftDetected"

Conditions = list[dict[str, Any]]


def find(conditions: Conditions | None, type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions or [] if c.get("type") == type_), None)


def is_true(conditions: Conditions | None, type_: str) -> bool:
    found = find(conditions, type_)
    return found is not None and found.get("status") == "True"


def set_condition(
    conditions: Conditions | None,
    *,
    type_: str,
    status: bool | str,
    reason: str,
    message: str,
    generation: int | None,
    now: str,
) -> Conditions:
    """Return conditions with one set; lastTransitionTime moves only when the status changes."""
    status_text = status if isinstance(status, str) else ("True" if status else "False")
    result = [dict(c) for c in conditions or []]
    previous = find(result, type_)
    entry = {
        "type": type_,
        "status": status_text,
        "reason": reason,
        "message": message[:32768],
        "observedGeneration": generation,
        "lastTransitionTime": now
        if previous is None or previous.get("status") != status_text
        else previous.get("lastTransitionTime", now),
    }
    if previous is None:
        result.append(entry)
    else:
        result[result.index(previous)] = entry
    return result


def remove(conditions: Conditions | None, type_: str) -> Conditions:
    return [dict(c) for c in conditions or [] if c.get("type") != type_]
