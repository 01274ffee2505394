"""Fixtures shared by every test layer live in tests/fixtures/, one module per thing they give."""

import os

# No test may reach a real AWS endpoint: S3 clients (in this process and in every process a test
# starts) get dummy credentials and a closed loopback port unless the `s3` fixture names its server.
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "segflow-test",
        "AWS_SECRET_ACCESS_KEY": "segflow-test-secret",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
)
for _name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
    os.environ.pop(_name, None)

pytest_plugins = [
    "tests.fixtures.servers",
    "tests.fixtures.database",
    "tests.fixtures.sandbox",
    "tests.fixtures.segflow",
    "tests.fixtures.processes",
    "tests.fixtures.s3",
]


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # type: ignore[no-untyped-def]
    """Say how many PostgreSQL tests ran, so a CI log shows they were not skipped."""
    passed = terminalreporter.stats.get("passed", [])
    ran = sum(1 for r in passed if "postgres" in r.keywords)
    skipped = sum(1 for r in terminalreporter.stats.get("skipped", []) if "postgres" in r.keywords)
    terminalreporter.write_line(f"PostgreSQL tests: {ran} passed, {skipped} skipped")
