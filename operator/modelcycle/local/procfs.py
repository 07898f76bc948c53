"""What Linux's /proc says of a process: enough to tell a live process from a reused pid."""

from __future__ import annotations


def stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (state first), or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            raw = stat.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; everything after its closing paren is split.
    return raw[raw.rindex(")") + 2 :].split()


def start_ticks(pid: int) -> int | None:
    """When the process started, in clock ticks since boot: with the pid, it names one process."""
    fields = stat_fields(pid)
    return int(fields[19]) if fields else None
