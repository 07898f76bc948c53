"""The `modelcycle` command: help for every subcommand, one-line errors for user mistakes."""

from __future__ import annotations

import importlib.util

import pytest

from modelcycle import __version__, cli
from support.repo import run_modelcycle


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # the parent package is missing
        return False


# Subcommands whose module has landed; a command joins this list as soon as its module exists.
AVAILABLE = [name for name, (module, _) in cli.COMMANDS.items() if _module_exists(module)]


def test_help_lists_every_subcommand() -> None:
    result = run_modelcycle("--help")
    assert result.returncode == 0, result.stderr
    for name, (_, help_text) in cli.COMMANDS.items():
        assert name in result.stdout
        assert help_text in result.stdout


def test_no_subcommand_prints_usage_and_exits_2() -> None:
    result = run_modelcycle()
    assert result.returncode == 2
    assert "usage: modelcycle" in result.stdout


def test_version_is_printed() -> None:
    result = run_modelcycle("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"modelcycle {__version__}"


@pytest.mark.parametrize("command", AVAILABLE, ids=AVAILABLE)
def test_subcommand_help_exits_zero(command: str) -> None:
    result = run_modelcycle(command, "--help")
    assert result.returncode == 0, result.stderr
    assert f"usage: modelcycle {command}" in result.stdout
    assert "Traceback" not in result.stderr


MISTAKES = [
    ("check-missing-directory", ["crds", "generate", "--out", "/proc/nonexistent/x", "--check"]),
    ("write-under-proc", ["crds", "generate", "--out", "/proc/nonexistent/x"]),
    ("out-is-a-file", ["crds", "generate", "--out", "pyproject.toml"]),
    ("check-out-is-a-file", ["crds", "generate", "--out", "pyproject.toml", "--check"]),
]


@pytest.mark.parametrize("args", [m[1] for m in MISTAKES], ids=[m[0] for m in MISTAKES])
def test_user_mistake_prints_one_error_line_and_no_traceback(args: list[str]) -> None:
    result = run_modelcycle(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert args[3] in lines[0]  # the message names the path at fault
