"""Fixtures live in tests/fix_*.py; each starts a real server (see docs/stack.md)."""

import gc

import pytest

pytest_plugins = [
    "tests.fix_mode",
    "tests.fix_secrets",
    "tests.fix_redis",
    "tests.fix_postgres",
    "tests.fix_influx",
    "tests.fix_prometheus",
    "tests.fix_alertmanager",
    "tests.fix_api",
    "tests.fix_browser",
]


@pytest.fixture(autouse=True)
def collect_garbage_after_each_test():
    """Collect garbage after every test, so a leaked socket fails the test that leaked it.

    With warnings as errors, an unclosed socket found by the collector at some
    later point would fail whichever test (or the session's end) runs then.
    """
    yield
    gc.collect()
