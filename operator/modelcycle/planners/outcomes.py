"""What one reconcile decided, and the condition helpers that build it (kstatus conventions).

A reconcile returns an `Outcome`: the status fields to merge over the old status, the Events to
announce and when to look again. It raises `Stalled` when the object cannot progress until
something outside the operator changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from modelcycle.api import conditions
from modelcycle.planners import clock


class Stalled(Exception):
    """The object cannot progress until something outside the operator changes.

    Reported as `Stalled=True`, `Ready=False` with the reason, plus a Warning Event; retried with
    backoff (a missing reference may appear), and at once when the object's spec changes.
    """

    def __init__(self, reason: str, message: str, *, extra_status: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.extra_status = extra_status or {}


@dataclass
class Event:
    reason: str
    message: str
    type: str = "Normal"


@dataclass
class Outcome:
    """What one reconcile decided: the new status (merged over the old) and what to announce."""

    status: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None


@dataclass(frozen=True)
class Change:
    """One write to a child the controller applies: `create` (body: the manifest, adopted on 409
    when this object owns it), `replace` (body: the whole object), `patch` (body: a merge patch) or
    `delete`."""

    verb: Literal["create", "replace", "patch", "delete"]
    kind: str
    name: str
    body: dict[str, Any] | None = None
    api_version: str | None = None


class ConditionUpdate(NamedTuple):
    """One condition to set."""

    type: str
    status: bool | str
    reason: str
    message: str


def updated_conditions(
    obj: dict[str, Any],
    updates: Sequence[ConditionUpdate],
    *,
    remove: tuple[str, ...] = (),
    now: str | None = None,
) -> conditions.Conditions:
    """The object's conditions with `remove` dropped and `updates` (type, status, reason, message) set."""
    generation = obj["metadata"].get("generation")
    stamp = now or clock.now()
    updated = (obj.get("status") or {}).get("conditions") or []
    for type_ in remove:
        updated = conditions.remove(updated, type_)
    for type_, value, reason, message in updates:
        updated = conditions.set_condition(
            updated,
            type_=type_,
            status=value,
            reason=reason,
            message=message,
            generation=generation,
            now=stamp,
        )
    return updated


def stalled_outcome(
    obj: dict[str, Any],
    *,
    reason: str,
    message: str,
    status: dict[str, Any] | None = None,
    extra: Sequence[ConditionUpdate] = (),
    phase: str = "Stalled",
    event_reason: str | None = None,
) -> Outcome:
    """Stalled=True, Ready=False (with extra conditions); the Warning Event only on a new verdict.

    Returned directly by a reconcile for a verdict that stands until the spec changes (a failed
    Job); the Runner uses it too for a raised `Stalled`, which it also retries with backoff.
    """
    current = (obj.get("status") or {}).get("conditions")
    updated = updated_conditions(
        obj,
        [
            ConditionUpdate(conditions.STALLED, True, reason, message),
            ConditionUpdate(conditions.READY, False, reason, message),
            *extra,
        ],
        remove=(conditions.RECONCILING,),
    )
    previous = conditions.find(current, conditions.STALLED)
    already_reported = (
        previous is not None
        and previous.get("status") == "True"
        and previous.get("reason") == reason
        and previous.get("message") == message
    )
    events = [] if already_reported else [Event(event_reason or reason, message, "Warning")]
    return Outcome(status={**(status or {}), "conditions": updated, "phase": phase}, events=events)


def progress_conditions(
    obj: dict[str, Any],
    *,
    ready: bool,
    reason: str,
    message: str,
    reconciling: bool,
    extra: Sequence[ConditionUpdate] = (),
    now: str | None = None,
) -> conditions.Conditions:
    """Ready with its reason, Reconciling while work is under way, Stalled cleared, and extras.

    extra: (type, status, reason, message) of kind-specific conditions such as Validated.
    """
    updates: list[ConditionUpdate] = [ConditionUpdate(conditions.READY, ready, reason, message)]
    if reconciling:
        updates.append(ConditionUpdate(conditions.RECONCILING, True, reason, message))
    return updated_conditions(
        obj,
        [*updates, *extra],
        remove=(conditions.STALLED,) if reconciling else (conditions.STALLED, conditions.RECONCILING),
        now=now,
    )


def in_progress_outcome(
    obj: dict[str, Any],
    *,
    reason: str,
    message: str,
    verdict: tuple[str, str],
    status: dict[str, Any] | None = None,
    events: list[Event] | None = None,
    requeue_after: float | None = None,
) -> Outcome:
    """Work under way: not Ready and Reconciling with `reason` (also the phase), and the kind's
    verdict condition Unknown; verdict is its (type, reason), e.g. (Validated, "Validating")."""
    verdict_type, verdict_reason = verdict
    updated = progress_conditions(
        obj,
        ready=False,
        reason=reason,
        message=message,
        reconciling=True,
        extra=(ConditionUpdate(verdict_type, "Unknown", verdict_reason, message),),
    )
    return Outcome(
        status={**(status or {}), "conditions": updated, "phase": reason},
        events=events or [],
        requeue_after=requeue_after,
    )


def drop_absent_nones(new: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """None deletes a status field (merge patch); leave it out when the field is absent anyway."""
    return {k: v for k, v in new.items() if v is not None or k in before}
