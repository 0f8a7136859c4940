"""Fixtures live in tests/fix_*.py; each starts a real server (see docs/stack.md)."""

pytest_plugins = [
    "tests.fix_mode",
    "tests.fix_redis",
    "tests.fix_postgres",
    "tests.fix_influx",
    "tests.fix_prometheus",
]
