"""Fixtures shared by every test layer live in tests/fixtures/, one module per thing they give."""

pytest_plugins = [
    "tests.fixtures.servers",
    "tests.fixtures.database",
    "tests.fixtures.sandbox",
    "tests.fixtures.segflow",
    "tests.fixtures.processes",
]


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # type: ignore[no-untyped-def]
    """Say how many PostgreSQL tests ran, so a CI log shows they were not skipped."""
    passed = terminalreporter.stats.get("passed", [])
    ran = sum(1 for r in passed if "postgres" in r.keywords)
    skipped = sum(1 for r in terminalreporter.stats.get("skipped", []) if "postgres" in r.keywords)
    terminalreporter.write_line(f"PostgreSQL tests: {ran} passed, {skipped} skipped")
