"""The checked-in gRPC modules are what grpcio-tools makes of inference.proto today."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "operator" / "modelcycle" / "workloads" / "oip"
GENERATED = ("inference_pb2.py", "inference_pb2.pyi", "inference_pb2_grpc.py")


def test_generated_modules_are_fresh(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_oip_grpc.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    fresh = tmp_path / "modelcycle" / "workloads" / "oip"
    stale = [name for name in GENERATED if (fresh / name).read_bytes() != (PACKAGE / name).read_bytes()]
    assert not stale, f"{stale} are stale: run `python tools/gen_oip_grpc.py` and commit the result"
