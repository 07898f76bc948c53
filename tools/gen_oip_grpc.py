"""Generate the Python modules of the Open Inference Protocol gRPC service from its .proto.

    python tools/gen_oip_grpc.py            # rewrite operator/modelcycle/workloads/oip/inference_pb2*.py(i)
    python tools/gen_oip_grpc.py --out DIR  # write them under DIR instead (the freshness test does)

Needs grpcio-tools (the `test` extra pins the version the checked-in modules were made with).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE_ROOT = ROOT / "operator"
PROTO = Path("modelcycle/workloads/oip/inference.proto")
OUTPUTS = ("inference_pb2.py", "inference_pb2.pyi", "inference_pb2_grpc.py")


def generate(out: Path) -> list[Path]:
    """Run protoc (grpcio-tools) on the .proto; return the generated files, written under `out`."""
    from grpc_tools import protoc

    out.mkdir(parents=True, exist_ok=True)
    code = protoc.main(
        [
            "protoc",
            f"-I{SOURCE_ROOT}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            str(SOURCE_ROOT / PROTO),
        ]
    )
    if code != 0:
        raise RuntimeError(f"protoc failed with exit code {code}")
    return [out / PROTO.parent / name for name in OUTPUTS]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, help="write the modules under this directory")
    args = parser.parse_args()
    if args.out is not None:
        for path in generate(args.out):
            print(path)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        for path in generate(Path(tmp)):
            target = SOURCE_ROOT / PROTO.parent / path.name
            target.write_bytes(path.read_bytes())
            print(target.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
