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


# --------------------------------------------------------------------------- the operator under test
# `operator` / `operator_factory`: the operator as a subprocess (killable, restartable; its log is
# added to a failed test's report). `kubelet`: runs a Job's pod locally and reports its status.
# `objects`: the ModelCycle objects of a fresh namespace enforcing Pod Security `restricted`;
# `kubectl_sees_ready`: `kubectl wait --for=condition=Ready` on one of them around a block.
from support.kubelet import kubelet  # noqa: E402, F401
from support.lifecycle import kubectl_sees_ready, objects  # noqa: E402, F401
from support.operator import (  # noqa: E402, F401
    operator,
    operator_factory,
    pytest_runtest_makereport,
    service_account_kubeconfig_factory,
)
