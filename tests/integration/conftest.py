"""Integration tier: tests against a real control plane (no node, so pods stay Pending).

The fixtures (`control_plane`, `kubeconfig`, `api_client`, `installed_crds`, `namespace`,
`new_namespace`, `kubectl`, `helm`) come from tests/support/cluster.py via tests/conftest.py.
"""

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)
