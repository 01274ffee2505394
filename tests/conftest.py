"""Fixtures shared by every test layer live in tests/fixtures/, one module per thing they give."""

pytest_plugins = [
    "tests.fixtures.servers",
    "tests.fixtures.database",
    "tests.fixtures.sandbox",
    "tests.fixtures.segflow",
    "tests.fixtures.processes",
]
