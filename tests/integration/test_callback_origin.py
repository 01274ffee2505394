"""The origin a delivery is keyed on is computed the same way by both databases: SQLite calls
service/callback_origin.py; PostgreSQL has its own segflow_origin() (migration 0007), so the two
must agree on every spelling, or one endpoint would get two shares of the per-endpoint limit."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.callback_origin import origin_of
from service.store import open_store_for
from tests.fixtures.database import drop_postgres_database, fresh_postgres_database, postgres_dsn

SPELLINGS = [
    "https://Hooks.Example.com/a?i=1",
    "https://hooks.example.com:443/b#x",
    "https://hooks.example.com?i=2",
    "http://user:pw@127.0.0.1:8080/h",
    "HTTP://127.0.0.1/h",
    "https://[::1]:9443/x",
    "https://[::1]/x",
    "https://h:/x",
    "not a url",
]


@pytest.mark.postgres
async def test_postgres_and_python_agree_on_every_origin() -> None:
    if postgres_dsn() is None:
        pytest.skip("SEGFLOW_TEST_POSTGRES_DSN is not set")
    database_url, name = await fresh_postgres_database()
    try:
        await compare(database_url)
    finally:
        await drop_postgres_database(name)


async def compare(database_url: str) -> None:
    store = open_store_for(database_url)
    await store.open()  # applies migration 0007
    await store.close()
    conn = await asyncpg.connect(database_url)
    try:
        for url in SPELLINGS:
            assert await conn.fetchval("SELECT segflow_origin($1)", url) == origin_of(url), url

        @settings(
            max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True
        )
        @given(
            st.sampled_from(["http", "https", "HTTPS"]),
            st.text("abcXYZ.-0123456789[]:@", min_size=0, max_size=20),
            st.text("/?#=&ab1", max_size=10),
        )
        def same(scheme: str, authority: str, rest: str) -> None:
            url = f"{scheme}://{authority}{rest}"
            got = pg_origin(url)
            assert got == origin_of(url), url

        def pg_origin(url: str) -> str:
            return asyncio.run_coroutine_threadsafe(conn.fetchval("SELECT segflow_origin($1)", url), loop).result(10)

        loop = asyncio.get_running_loop()
        await asyncio.to_thread(same)
    finally:
        await conn.close()


def test_one_endpoint_however_spelled() -> None:
    assert len({origin_of(u) for u in SPELLINGS[:3]}) == 1
    assert origin_of("HTTP://127.0.0.1/h") == "http://127.0.0.1:80"
    assert origin_of("https://[::1]/x") == "https://[::1]:443"
