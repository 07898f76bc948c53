"""images/Dockerfile.*: structure checks that hold without Docker (the build itself runs in CI/kind).

Multi-stage (a builder makes wheels, the final stage only installs them), a base pinned to an exact
release or a digest, a numeric non-root USER, a `modelcycle` console-script entrypoint declared in
pyproject.toml, OCI labels, no build tools or source tree in the final stage, and a .dockerignore
that keeps the context to the package.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((REPO / "images").glob("Dockerfile.*"))
REQUIRED_LABELS = {
    "org.opencontainers.image.title",
    "org.opencontainers.image.description",
    "org.opencontainers.image.source",
    "org.opencontainers.image.licenses",
    "org.opencontainers.image.version",
    "org.opencontainers.image.revision",
}
BUILD_TOOLS = (
    "gcc",
    "g++",
    "build-essential",
    "make ",
    "git ",
    "curl ",
    "wget ",
    "pip wheel",
    "python -m build",
)


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]


def parse(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages) of a Dockerfile; continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), parts[0])
            stages.append(Stage(base=base, name=name))
        elif keyword == "ARG" and not stages:
            key, _, default = rest.partition("=")
            args[key] = default
        elif stages:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def exec_form(value: str) -> list[str]:
    assert value.startswith("["), f"use the exec form (JSON array), got {value}"
    import json

    parsed = json.loads(value)
    assert isinstance(parsed, list)
    return [str(v) for v in parsed]


def test_both_images_exist() -> None:
    assert [p.name for p in DOCKERFILES] == ["Dockerfile.operator", "Dockerfile.workload"]


@pytest.fixture(params=DOCKERFILES, ids=lambda p: p.name)
def dockerfile(request: pytest.FixtureRequest) -> Path:
    path: Path = request.param
    return path


def test_multi_stage_with_a_builder(dockerfile: Path) -> None:
    _, stages = parse(dockerfile)
    assert len(stages) >= 2, "build wheels in a builder stage, install them in the final one"
    builder = stages[0]
    assert builder.name == "builder"
    assert any("pip wheel" in run for run in builder.all("RUN")), "the builder stage builds wheels"
    final = stages[-1]
    copies_from_builder = [c for c in final.all("COPY") if "--from=builder" in c]
    mounts_from_builder = [r for r in final.all("RUN") if "from=builder" in r]
    assert copies_from_builder or mounts_from_builder, "the final stage takes the builder's wheels"


def test_base_image_is_pinned(dockerfile: Path) -> None:
    _, stages = parse(dockerfile)
    for stage in stages:
        base = stage.base
        if base in {s.name for s in stages}:
            continue
        pinned_digest = re.search(r"@sha256:[a-f0-9]{64}$", base)
        pinned_tag = re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?", base)
        assert pinned_digest or pinned_tag, (
            f"{dockerfile.name}: base {base} is not pinned to a release or digest"
        )
        assert base.startswith("python:3.11"), f"{dockerfile.name}: the project targets Python 3.11"


def test_final_stage_runs_as_numeric_non_root_user(dockerfile: Path) -> None:
    _, stages = parse(dockerfile)
    users = stages[-1].all("USER")
    assert users, "the final stage sets USER"
    user = users[-1]
    assert re.fullmatch(r"\d+(:\d+)?", user), f"USER must be numeric (runAsNonRoot checks it), got {user}"
    assert all(int(part) != 0 for part in user.split(":"))
    assert int(user.split(":")[0]) == 10001, "workload pods and the chart run as uid 10001"


def test_entrypoint_is_the_declared_console_script(dockerfile: Path) -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    scripts = pyproject["project"]["scripts"]
    _, stages = parse(dockerfile)
    final = stages[-1]
    entrypoint = exec_form(final.all("ENTRYPOINT")[-1])
    assert entrypoint[0] in scripts, f"ENTRYPOINT {entrypoint} is not a console script of pyproject.toml"
    assert entrypoint == ["modelcycle"]
    command = exec_form(final.all("CMD")[-1])
    if dockerfile.name.endswith("operator"):
        assert command == ["operator"]


def test_oci_labels(dockerfile: Path) -> None:
    _, stages = parse(dockerfile)
    labels: set[str] = set()
    for value in stages[-1].all("LABEL"):
        labels |= {token.split("=", 1)[0] for token in shlex.split(value) if "=" in token}
    assert labels >= REQUIRED_LABELS, f"missing OCI labels: {sorted(REQUIRED_LABELS - labels)}"


def test_final_stage_has_no_build_tools_or_sources(dockerfile: Path) -> None:
    _, stages = parse(dockerfile)
    final = stages[-1]
    for run in final.all("RUN"):
        assert "apt-get install" not in run, f"install system packages in the builder stage: {run}"
        for tool in BUILD_TOOLS:
            assert tool not in f"{run} ", f"{tool.strip()} in the final stage: {run}"
        assert "--no-index" in run or "pip install" not in run, "install only the builder's wheels, offline"
    for copy in final.all("COPY"):
        assert "--from=" in copy, f"the final stage copies nothing from the build context: {copy}"
    assert any("pip uninstall" in run for run in final.all("RUN")), "remove pip from the runtime image"


def test_environment_suits_a_read_only_root_filesystem(dockerfile: Path) -> None:
    _, stages = parse(dockerfile)
    env = " ".join(stages[-1].all("ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "HOME=/tmp" in env


def test_dockerignore_admits_only_the_package() -> None:
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "start from nothing, then admit what the build needs"
    admitted = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert admitted >= {"pyproject.toml", "operator"}
    assert not admitted & {"tests", "charts", ".git", "examples"}
