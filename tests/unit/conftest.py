"""The unit tests import the test support package (tests/support) as `support`, whoever runs them: pytest from
the checkout (tests/conftest.py) or `ansible-test units` on a copy at ansible_collections/multihv/cloud."""

import pathlib
import sys

_TESTS = str(pathlib.Path(__file__).resolve().parents[1])
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
