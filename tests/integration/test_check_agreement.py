"""`modelcycle check` and a real API server agree on every object of the malformed corpus.

Each malformed object (tests/support/malformed_cases.py: malformed in exactly one way) and its valid
twin go through `modelcycle check` (one run over the whole corpus, as a GitOps CI job would run it)
and through `kubectl apply --dry-run=server` against the real control plane with the generated
CRDs installed. Both refuse every malformed object naming the same field, and both accept every
twin.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelcycle.api.admission import names_field
from support import malformed_cases as cases

CASES = cases.MALFORMED


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    return obj["kind"], str(obj.get("metadata", {}).get("name") or "<no name>")


def _check(tmp_path: Path, objects: list[dict[str, Any]]) -> dict[tuple[str, str], list[str]]:
    """The error fields `modelcycle check` reports, by (kind, name)."""
    path = tmp_path / "corpus.yaml"
    path.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    done = subprocess.run(
        [sys.executable, "-m", "modelcycle", "check", "-f", str(path), "--output", "json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr
    found: dict[tuple[str, str], list[str]] = {}
    for finding in json.loads(done.stdout)["findings"]:
        if finding["severity"] == "error":
            found.setdefault((finding["kind"], finding["name"]), []).append(finding["field"])
    return found


@pytest.fixture(scope="module")
def offline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[tuple[str, str], list[str]]]:
    tmp = tmp_path_factory.mktemp("check")
    return {
        "malformed": _check(tmp, [c.object for c in CASES]),
        "twins": _check(tmp, [c.twin for c in CASES]),
    }


def _server(
    kubectl: Path, kubeconfig: Path, namespace: str, obj: dict[str, Any], path: Path
) -> tuple[int, str]:
    path.write_text(yaml.safe_dump(obj, sort_keys=False))
    done = subprocess.run(
        [
            str(kubectl),
            "--kubeconfig",
            str(kubeconfig),
            "-n",
            namespace,
            "apply",
            "--dry-run=server",
            "-f",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stderr


def test_corpus_is_large_and_every_case_differs_from_its_twin_in_one_value() -> None:
    assert len(CASES) >= 60
    for case in CASES:
        assert case.object != case.twin, case.id


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_check_and_api_server_refuse_naming_the_same_field_and_accept_the_twin(
    case: cases.MalformedCase,
    offline: dict[str, dict[tuple[str, str], list[str]]],
    kubectl: Path,
    kubeconfig: Path,
    installed_crds: list[str],
    namespace: str,
    tmp_path: Path,
) -> None:
    offline_fields = offline["malformed"].get(_key(case.object), [])
    assert case.field in offline_fields, f"modelcycle check named {offline_fields}"
    assert offline["twins"].get(_key(case.twin)) is None, offline["twins"][_key(case.twin)]

    code, message = _server(kubectl, kubeconfig, namespace, case.object, tmp_path / "bad.yaml")
    assert code != 0, "the API server accepted it"
    assert names_field(message, case.field), message
    code, message = _server(kubectl, kubeconfig, namespace, case.twin, tmp_path / "twin.yaml")
    assert code == 0, message
