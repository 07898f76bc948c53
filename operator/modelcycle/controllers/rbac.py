"""The operator's RBAC: the union of what each controller module calls, and nothing wildcarded.

Each controller module declares `RBAC_RULES` (PolicyRule dicts) next to the code that needs them,
and its entry in `controllers.registry` carries them; this module adds what the shared machinery
needs and builds one ClusterRole from the union:

- the runtime: get the five kinds (every reconcile re-reads its object), patch their `/status`
  subresource (the only way status is written), create Events;
- kopf's watches: list and watch the five kinds and the child kinds it watches (Jobs,
  Deployments); list and watch CustomResourceDefinitions (kopf rescans resources when CRDs come
  and go; without it, it warns and only notices CRDs at start-up);
- with `--namespace` (namespaced mode) kopf lists and watches namespaces to match the patterns;
- with `--peering`, kopf's peering objects (the `kopf.dev` CRDs must be installed).

`modelcycle operator --print-rbac` prints the ClusterRole (the Helm chart's template is checked
against it).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import yaml

from modelcycle import GROUP
from modelcycle.api import kinds
from modelcycle.controllers import registry

CLUSTER_ROLE_NAME = "modelcycle-operator"

RUNTIME_RULES: list[dict[str, Any]] = [
    {"apiGroups": [GROUP], "resources": [k.plural for k in kinds.ALL], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [GROUP], "resources": [f"{k.plural}/status" for k in kinds.ALL], "verbs": ["patch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    # kopf: the child watches (controllers/main.py CHILD_KINDS) and resource discovery.
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["list", "watch"]},
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["list", "watch"]},
    {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "verbs": ["list", "watch"],
    },
]
NAMESPACED_MODE_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
]
PEERING_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": ["kopf.dev"],
        "resources": ["clusterkopfpeerings", "kopfpeerings"],
        "verbs": ["get", "list", "watch", "patch"],
    },
]
_VERB_ORDER = ("get", "list", "watch", "create", "update", "patch", "delete")


def controller_rules() -> dict[str, list[dict[str, Any]]]:
    """The RBAC rules of every controller, by kind."""
    return {kind: list(controller.rbac_rules) for kind, controller in registry.REGISTRY.items()}


def merge(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The union of rules, one rule per (apiGroup, set of verbs), in a stable order."""
    verbs_of: dict[tuple[str, str], set[str]] = defaultdict(set)
    for rule in rules:
        if rule.get("resourceNames") or rule.get("nonResourceURLs"):
            raise ValueError(f"unsupported rule {rule}: only apiGroups/resources/verbs")
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                verbs_of[(group, resource)].update(rule["verbs"])
    grouped: dict[tuple[str, tuple[str, ...]], list[str]] = defaultdict(list)
    for (group, resource), verbs in verbs_of.items():
        ordered = tuple(sorted(verbs, key=lambda v: (_VERB_ORDER.index(v) if v in _VERB_ORDER else 99, v)))
        grouped[(group, ordered)].append(resource)
    return [
        {"apiGroups": [group], "resources": sorted(resources), "verbs": list(verbs)}
        for (group, verbs), resources in sorted(
            grouped.items(), key=lambda item: (item[0][0], sorted(item[1]))
        )
    ]


def all_rules(*, namespaced: bool = True, peering: bool = False) -> list[dict[str, Any]]:
    rules = [*RUNTIME_RULES]
    for module_rules in controller_rules().values():
        rules += module_rules
    if namespaced:
        rules += NAMESPACED_MODE_RULES
    if peering:
        rules += PEERING_RULES
    return merge(rules)


def cluster_role(
    *, name: str = CLUSTER_ROLE_NAME, namespaced: bool = True, peering: bool = False
) -> dict[str, Any]:
    """The operator's ClusterRole. namespaced: include what `--namespace` mode needs (on by default,
    so one role serves both modes); peering: include kopf's peering objects."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/name": "modelcycle", "app.kubernetes.io/component": "operator"},
        },
        "rules": all_rules(namespaced=namespaced, peering=peering),
    }


def cluster_role_yaml(**kwargs: Any) -> str:
    return str(yaml.safe_dump(cluster_role(**kwargs), sort_keys=False))
