"""Everything derived from another source is in step with it (tools/deploy/sync.py regenerates it).

- charts/modelcycle/crds/ are byte-for-byte copies of crds/ (the generated CRDs);
- charts/modelcycle/files/operator-rbac.yaml is `modelcycle operator --print-rbac`;
- manifests/base is `helm template` of the chart, and the single-namespace overlay renders exactly
  like the chart with watchNamespaces set;
- examples/gitops/argocd-cm-health.yaml embeds tools/argocd-health/modelcycle.lua.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.cluster import missing_prerequisite, require_binaries
from support.repo import deploy_sync

REPO = Path(__file__).resolve().parents[2]
FIX = "run `python tools/deploy/sync.py` (make deploy-sync) and commit the result"


def assert_fresh(step: str) -> None:
    try:
        diffs = deploy_sync().stale(step)
    except deploy_sync().Unavailable as exc:
        missing_prerequisite(f"{step}: {exc}")
    assert not diffs, f"{step} is stale; {FIX}:\n" + "\n".join(d[:3000] for d in diffs.values())


def test_chart_crds_are_copies_of_the_generated_crds() -> None:
    chart_crds = sorted(p.name for p in (REPO / "charts/modelcycle/crds").glob("*.yaml"))
    assert chart_crds == sorted(p.name for p in (REPO / "crds").glob("*.yaml"))
    assert_fresh("chart CRDs")


def test_chart_rbac_is_what_the_operator_prints() -> None:
    """The chart grants exactly the rules the controller modules declare (RBAC_RULES)."""
    assert_fresh("operator RBAC")


def test_rbac_split_keeps_every_rule() -> None:
    rules = [
        {"apiGroups": [""], "resources": ["namespaces", "events"], "verbs": ["list"]},
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]},
        {"nonResourceURLs": ["/metrics"], "verbs": ["get"]},
    ]
    split = deploy_sync().split_rules(rules)
    assert split["namespaced"] == [
        {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]},
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]},
    ]
    assert split["cluster"] == [
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list"]},
        {"nonResourceURLs": ["/metrics"], "verbs": ["get"]},
    ]


def test_kustomize_base_is_the_rendered_chart() -> None:
    require_binaries(("helm",))
    assert_fresh("kustomize base")


def test_kustomize_overlay_is_up_to_date() -> None:
    require_binaries(("helm",))
    assert_fresh("kustomize overlay")


def _objects(text: str) -> dict[tuple[str, str, str, str], dict[str, Any]]:
    return {deploy_sync().object_id(d): d for d in yaml.safe_load_all(text) if d}


@pytest.mark.parametrize(
    ("directory", "set_args"),
    [
        ("manifests/base", ()),
        ("manifests/overlays/single-namespace", ("watchNamespaces={modelcycle-system}",)),
    ],
)
def test_kustomize_renders_exactly_the_chart(directory: str, set_args: tuple[str, ...]) -> None:
    """`kubectl kustomize` of base/overlay == `helm template` (+ the Namespace) object for object."""
    binaries = require_binaries(("helm", "kubectl"))
    built = subprocess.run(
        [str(binaries["kubectl"]), "kustomize", str(REPO / directory)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    chart = deploy_sync().helm_template(*set_args)
    namespace = yaml.safe_load((REPO / "manifests/base/namespace.yaml").read_text())
    want = _objects(chart) | _objects(yaml.safe_dump(namespace))
    got = _objects(built)
    assert sorted(got) == sorted(want)
    for key, obj in want.items():
        assert got[key] == obj, f"{key} differs"


def test_json_patch_round_trip() -> None:
    old = {"a": {"b": [1, 2], "c": "x", "d/e": 1}, "keep": True}
    new = {"a": {"b": [1, 3], "d/e": 2, "f": [1]}, "keep": True}
    ops = deploy_sync().json_patch(old, new)
    assert ops == [
        {"op": "remove", "path": "/a/c"},
        {"op": "replace", "path": "/a/b/1", "value": 3},
        {"op": "replace", "path": "/a/d~1e", "value": 2},
        {"op": "add", "path": "/a/f", "value": [1]},
    ]


def test_argocd_health_snippet_embeds_the_script() -> None:
    assert_fresh("Argo CD health snippet")
    snippet = yaml.safe_load((REPO / "examples/gitops/argocd-cm-health.yaml").read_text())
    script = (REPO / "tools/argocd-health/modelcycle.lua").read_text()
    from modelcycle.api import kinds

    assert {f"resource.customizations.health.modelcycle.io_{k.kind}" for k in kinds.ALL} == set(
        snippet["data"]
    )
    for value in snippet["data"].values():
        assert value == script


def test_gitops_examples_point_at_real_paths() -> None:
    """The Argo CD Applications and Flux Kustomizations sync paths that exist in this repository."""
    apps = [
        d for d in yaml.safe_load_all((REPO / "examples/gitops/argocd-application.yaml").read_text()) if d
    ]
    assert {a["kind"] for a in apps} == {"Application"}
    for app in apps:
        source = app["spec"]["source"]
        assert (REPO / source["path"]).is_dir(), source["path"]
        excluded = source.get("directory", {}).get("exclude")
        if excluded:
            assert (REPO / source["path"] / excluded).is_file(), excluded
        if source["path"] == "charts/modelcycle":
            assert app["spec"]["syncPolicy"]["syncOptions"] == [
                "CreateNamespace=true",
                "ServerSideApply=true",
            ]
    flux = [
        d for d in yaml.safe_load_all((REPO / "examples/gitops/flux-kustomization.yaml").read_text()) if d
    ]
    kustomizations = [d for d in flux if d["kind"] == "Kustomization"]
    assert kustomizations and all((REPO / k["spec"]["path"]).is_dir() for k in kustomizations)
    names = {k["metadata"]["name"] for k in kustomizations}
    for k in kustomizations:
        assert {dep["name"] for dep in k["spec"].get("dependsOn", [])} <= names
        for patch in k["spec"].get("patches", []):
            target = patch["target"]
            files = (REPO / k["spec"]["path"]).glob("*.yaml")
            assert any(
                d and d.get("kind") == target["kind"] and d["metadata"]["name"] == target["name"]
                for f in files
                for d in yaml.safe_load_all(f.read_text())
            ), target
