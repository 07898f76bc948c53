"""The container-logs endpoint's pure parts: which file, how many lines."""

from __future__ import annotations

import os
from pathlib import Path

from modelcycle.local.node_logs import log_files, tail_lines


def test_tail_lines() -> None:
    data = b"a\nb\nc\n"
    assert tail_lines(data, 2) == b"b\nc\n"
    assert tail_lines(data, 10) == data
    assert tail_lines(data, 0) == b""
    assert tail_lines(data, -1) == data
    assert tail_lines(b"a\nb", 1) == b"b"


def test_log_files_of_the_newest_pod_with_that_name(tmp_path: Path) -> None:
    old = tmp_path / "ns_web_uid-old" / "main"
    new = tmp_path / "ns_web_uid-new" / "main"
    other = tmp_path / "ns_web-2_uid-x" / "main"
    for directory in (old, new, other):
        directory.mkdir(parents=True)
    (old / "0.log").write_text("old")
    os.utime(old / "0.log", (1, 1))
    for n in (0, 1, 10, 2):
        (new / f"{n}.log").write_text(str(n))
    (other / "0.log").write_text("other pod")
    assert [f.name for f in log_files(tmp_path, "ns", "web", "main")] == ["0.log", "1.log", "2.log", "10.log"]
    assert log_files(tmp_path, "ns", "web", "sidecar") == []
    assert log_files(tmp_path, "ns", "absent", "main") == []
