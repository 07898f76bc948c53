"""Root of every test tier: makes `support` importable and registers the shared cluster fixtures.

The cluster fixtures live in one plugin so that integration and e2e tests share a single
session-scoped control plane; fixtures are lazy, so unit tests never start one.
"""

import sys
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

pytest_plugins = ["support.cluster"]
