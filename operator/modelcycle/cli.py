"""The `modelcycle` command: a thin dispatcher to the module that owns each subcommand.

Each subcommand module exposes `configure(parser)` and `run(args) -> int`. Modules are imported
only when their subcommand runs, so `modelcycle --help` stays fast and a workload image never
imports the operator's dependencies it does not use.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from modelcycle import __version__, errors

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "operator": ("modelcycle.controllers.main", "run the operator (all namespaces or a list)"),
    "crds": ("modelcycle.api.crdgen", "generate or check the CRD YAML from the pydantic models"),
    "check": ("modelcycle.check", "validate manifests offline as the API server would"),
    "data": ("modelcycle.workloads.data", "snapshot, validate and profile a Dataset"),
    "train": ("modelcycle.workloads.train", "train a model from a TrainingRun spec"),
    "validate": ("modelcycle.workloads.validate", "verify, evaluate and gate a ModelVersion"),
    "serve": ("modelcycle.workloads.serve", "serve a model over the Open Inference Protocol v2"),
    "local": ("modelcycle.local.commands", "run the whole platform on this machine"),
}


# A dependency that only some commands import -> the extra that installs it.
OPTIONAL_DEPENDENCIES: dict[str, str] = {"kubernetes": "operator"}


def build_parser(command: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelcycle",
        description="ModelCycle: the ML lifecycle on Kubernetes as custom resources.",
    )
    parser.add_argument("--version", action="version", version=f"modelcycle {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == command:
            importlib.import_module(module_name).configure(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in args_list if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(args_list)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        module = importlib.import_module(COMMANDS[args.command][0])
    except ModuleNotFoundError as exc:
        if exc.name not in OPTIONAL_DEPENDENCIES:
            raise
        extra = OPTIONAL_DEPENDENCIES[exc.name]
        print(
            f"error: `modelcycle {args.command}` needs {exc.name}: install it with "
            f"`pip install 'modelcycle[{extra}]'` (the workload image has only what the workloads need)",
            file=sys.stderr,
        )
        return 2
    try:
        return int(module.run(args))
    except errors.UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
