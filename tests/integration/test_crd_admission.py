"""A real API server with the generated CRDs admits the examples and refuses malformed objects.

The very objects tests/unit/test_crd_schemas.py checks offline (tests/support/malformed_cases.py),
so a difference between the offline engine and the API server shows up as a failure here.
Fixtures (`api_client`, `namespace`, with the CRDs installed) come from tests/support/cluster.py.
"""

from __future__ import annotations

import json
from typing import Any, cast

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from modelcycle import GROUP, VERSION
from modelcycle.api.admission import names_field
from support import malformed_cases as cases

EXAMPLES = cases.load_examples()


def _create(
    api: client.ApiClient, namespace: str, obj: dict[str, Any], *, validation: str = "Strict"
) -> dict[str, Any]:
    # Strict field validation, as `kubectl apply` asks for: an unknown field is refused, not pruned.
    plural = cases.PLURALS[obj["kind"]]
    created = client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, obj, field_validation=validation
    )
    return cast(dict[str, Any], created)


def _replace(api: client.ApiClient, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
    plural, name = cases.PLURALS[obj["kind"]], obj["metadata"]["name"]
    replaced = client.CustomObjectsApi(api).replace_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, name, obj
    )
    return cast(dict[str, Any], replaced)


def _get(api: client.ApiClient, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
    plural, name = cases.PLURALS[obj["kind"]], obj["metadata"]["name"]
    found = client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
    return cast(dict[str, Any], found)


def _refusal(excinfo: pytest.ExceptionInfo[ApiException]) -> str:
    """The API server's message, which lists every refused field as `<path>: <reason>`."""
    assert excinfo.value.status in (400, 422), excinfo.value
    message: str = json.loads(excinfo.value.body or "{}")["message"]
    return message


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.id for e in EXAMPLES])
def test_example_is_admitted(api_client: client.ApiClient, namespace: str, example: cases.Example) -> None:
    created = _create(api_client, namespace, example.object)
    assert created["spec"] == example.object["spec"]  # nothing pruned: every example field is declared


@pytest.mark.parametrize("case", cases.VALID, ids=[c.id for c in cases.VALID])
def test_object_at_the_edge_of_the_rules_is_admitted(
    api_client: client.ApiClient, namespace: str, case: cases.ValidCase
) -> None:
    _create(api_client, namespace, case.object)


@pytest.mark.parametrize("case", cases.MALFORMED, ids=[c.id for c in cases.MALFORMED])
def test_malformed_object_is_refused_naming_the_field(
    api_client: client.ApiClient, namespace: str, case: cases.MalformedCase
) -> None:
    with pytest.raises(ApiException) as excinfo:
        _create(api_client, namespace, case.object)
    message = _refusal(excinfo)
    assert names_field(message, case.field), message


def test_modelversion_spec_update_is_refused_as_immutable(
    api_client: client.ApiClient, namespace: str
) -> None:
    old, new, field = cases.immutable_update()
    created = _create(api_client, namespace, old)
    new["metadata"]["resourceVersion"] = created["metadata"]["resourceVersion"]
    with pytest.raises(ApiException) as excinfo:
        _replace(api_client, namespace, new)
    message = _refusal(excinfo)
    assert names_field(message, field) and "immutable" in message, message
    assert _get(api_client, namespace, old)["spec"] == old["spec"]


def test_modelversion_label_change_is_admitted(api_client: client.ApiClient, namespace: str) -> None:
    old, new = cases.metadata_update()
    created = _create(api_client, namespace, old)
    new["metadata"]["resourceVersion"] = created["metadata"]["resourceVersion"]
    assert _replace(api_client, namespace, new)["metadata"]["labels"] == new["metadata"]["labels"]


def test_unknown_spec_field_is_pruned_without_strict_validation(
    api_client: client.ApiClient, namespace: str
) -> None:
    # Without strict field validation (a plain API request) the server drops it silently.
    obj = cases.with_changes(cases.BASES["Dataset"], "typo", {"spec.refreshSecond": 60})
    created = _create(api_client, namespace, obj, validation="Ignore")
    assert "refreshSecond" not in created["spec"]
    assert created["spec"]["source"] == obj["spec"]["source"]
