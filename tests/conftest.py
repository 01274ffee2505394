"""Fixtures shared by every test layer live in tests/fixtures/, one module per thing they give."""

pytest_plugins = [
    "tests.fixtures.servers",
    "tests.fixtures.sandbox",
]
