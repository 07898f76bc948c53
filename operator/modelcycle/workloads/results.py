"""How a workload reports: one compact JSON document (<= 4 KiB) in the termination message and on stdout.

Every workload command (`data`, `train`, `validate`) ends by writing its result JSON to the
container's termination-message file and printing the same JSON as the last line of stdout. On
failure the document has `ok: false`, a CamelCase `reason` and a `message`; stderr gets one
`error: <message>` line and the process exits non-zero:

- 0 success (for `validate`, also a version that failed its gates: see `validated`);
- 1 a failure that retrying will not fix (bad data, refused artifact, unknown estimator...);
- 2 an unusable spec or flag value (reason `InvalidSpec`);
- 3 a failure that a retry may fix (network, store or source unavailable).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

MAX_BYTES = 4096
DEFAULT_TERMINATION_LOG = "/dev/termination-log"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_TRANSIENT = 3

log = logging.getLogger("modelcycle.workloads")


class WorkloadError(Exception):
    """A failure with a CamelCase reason, reported in the result JSON."""

    reason = "InternalError"
    exit_code = EXIT_FAILED

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        exit_code: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason
        if exit_code is not None:
            self.exit_code = exit_code
        self.details: dict[str, Any] = dict(details or {})

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.reason


class InvalidSpec(WorkloadError):
    reason = "InvalidSpec"
    exit_code = EXIT_INVALID


def json_safe(value: Any) -> Any:
    """Plain JSON values: non-finite floats become null, numpy scalars Python scalars, others repr()."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item) and getattr(value, "shape", None) == ():
        return json_safe(item())
    return repr(value)


def dumps(doc: dict[str, Any]) -> str:
    """Compact, ASCII-only JSON (so the length in characters is the length in bytes)."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=True, allow_nan=False))


def _shrink_largest(doc: Any) -> bool:
    """Halve the largest list, dict or string inside `doc` (in place). False if nothing can shrink."""
    best: tuple[int, Any, Any] | None = None  # (size, container, key)

    def visit(container: Any, key: Any, value: Any) -> None:
        nonlocal best
        if isinstance(value, list | dict | str):
            size = _size(value)
            shrinkable = len(value) > 1 if not isinstance(value, str) else len(value) > 40
            if shrinkable and (best is None or size > best[0]):
                best = (size, container, key)
        if isinstance(value, dict):
            for k, v in value.items():
                visit(value, k, v)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                visit(value, i, v)

    for k, v in doc.items():
        if k not in ("ok", "reason"):
            visit(doc, k, v)
    if best is None:
        return False
    _, container, key = best
    value = container[key]
    if isinstance(value, str):
        container[key] = value[: len(value) // 2] + "..."
    elif isinstance(value, list):
        del value[max(1, len(value) // 2) :]
    else:
        for k in list(value)[max(1, len(value) // 2) :]:
            del value[k]
    return True


def fit(doc: dict[str, Any], limit: int = MAX_BYTES) -> str:
    """The document as compact JSON of at most `limit` bytes, trimming the largest parts first.

    Lists keep their first items, dicts their first keys, strings their beginning; a trimmed
    document gets `"truncated": true`. The result is always valid JSON.
    """
    doc = json_safe(doc)
    text = dumps(doc)
    if len(text) <= limit:
        return text
    doc["truncated"] = True
    while len(text) > limit and _shrink_largest(doc):
        text = dumps(doc)
    if len(text) > limit:  # pathological: keep only the essentials
        text = dumps(
            {
                "ok": doc.get("ok", False),
                "reason": str(doc.get("reason", "ResultTooLarge"))[:200],
                "message": str(doc.get("message", ""))[:1000],
                "truncated": True,
            }
        )
    return text


def termination_log_path(explicit: str | None) -> Path | None:
    """`--termination-log`, else env MODELCYCLE_TERMINATION_LOG, else /dev/termination-log if writable.

    An empty value or `-` means: do not write one.
    """
    value = explicit if explicit is not None else os.environ.get("MODELCYCLE_TERMINATION_LOG")
    if value is not None:
        return None if value in ("", "-") else Path(value)
    default = Path(DEFAULT_TERMINATION_LOG)
    if default.exists() and os.access(default, os.W_OK):
        return default
    return None


def emit(doc: dict[str, Any], termination_log: str | None = None) -> str:
    """Write the result to the termination-message file and print it as stdout's last line."""
    text = fit(doc)
    path = termination_log_path(termination_log)
    if path is not None:
        try:
            # Not via rename: /dev/termination-log is a bind-mounted file.
            with open(path, "w", encoding="ascii") as fh:
                fh.write(text)
        except OSError as exc:
            log.warning("cannot write the termination message to %s: %s", path, exc)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
    return text


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--termination-log",
        metavar="PATH",
        default=None,
        help="where to write the result JSON (default: env MODELCYCLE_TERMINATION_LOG, else "
        "/dev/termination-log when writable; '-' for none)",
    )


def run_workload(args: argparse.Namespace, body: Callable[[], dict[str, Any]]) -> int:
    """Run a workload body and report its result or failure. Returns the exit code."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
    try:
        result = {"ok": True, **body()}
        code = EXIT_OK
    except WorkloadError as exc:
        result = {"ok": False, "reason": exc.reason, "message": exc.message, **exc.details}
        code = exc.exit_code
        print(f"error: {exc.message}", file=sys.stderr)
    except MemoryError:
        result = {"ok": False, "reason": "OutOfMemory", "message": "the workload ran out of memory"}
        code = EXIT_FAILED
        print("error: the workload ran out of memory", file=sys.stderr)
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        message = f"unexpected error: {type(exc).__name__}: {exc}"
        result = {"ok": False, "reason": "InternalError", "message": message}
        code = EXIT_FAILED
        print(f"error: {message}", file=sys.stderr)
    emit(result, getattr(args, "termination_log", None))
    return code
