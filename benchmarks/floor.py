"""The ceiling baseline of the ingest benchmark: the least a durable webhook receiver can do.

The bare endpoint (body, constant-time secret check, JSON parse) plus the naive group commit of
`../shared/LIMITS.md`: one writer, up to 256 webhooks per transaction, each one `UPDATE` of its job
row (`submitted` to `fetching`), answered after COMMIT returned, at segflow's durability
(`synchronous=FULL` / `synchronous_commit=on`). No event row, no task row, no decoding of the body
into types, no state machine: every receiver that keeps what segflow keeps does strictly more, so
this row is how far the machine and the load generator let any of them go.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import sqlite3
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from itertools import groupby
from typing import Any

import orjson

from service.webhook_secrets import WebhookSecrets

UPDATE = "UPDATE jobs SET state = 'fetching', updated_at = {0} WHERE id = {1} AND state = 'submitted'"
GROUP_MAX = 256
Write = tuple[str, tuple[Any, ...]]  # (statement with {0}, {1}, … for its parameters, parameters)


class GroupCommit:
    """Queue writes; one writer commits what is queued in one transaction (consecutive writes of
    one statement in one `executemany`), then answers every caller of that group. Written apart
    from `Store`'s group committer on purpose: a baseline must not run the code it is the baseline
    of. (`benchmarks/e2e_floor.py` uses it too.)"""

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._pending: list[tuple[Write, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._sqlite: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(1)
        self._pg: Any = None
        self._task: asyncio.Task[None] | None = None  # held: the loop keeps only a weak reference

    async def start(self) -> None:
        if self._url.startswith("sqlite:///"):
            self._sqlite = sqlite3.connect(
                self._url.removeprefix("sqlite:///"), isolation_level=None, check_same_thread=False
            )
            self._sqlite.execute("PRAGMA journal_mode = WAL")
            self._sqlite.execute("PRAGMA synchronous = FULL")
        else:
            import asyncpg

            self._pg = await asyncpg.connect(self._url)
            await self._pg.execute("SET synchronous_commit = on")
        self._task = asyncio.get_running_loop().create_task(self._writer())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._pg is not None:
            await self._pg.close()
        if self._sqlite is not None:
            self._sqlite.close()
        self._thread.shutdown()

    async def write(self, statement: str, *params: Any) -> None:
        fut = asyncio.get_running_loop().create_future()
        self._pending.append(((statement, params), fut))
        self._wake.set()
        await fut

    async def _writer(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                group, self._pending = self._pending[:GROUP_MAX], self._pending[GROUP_MAX:]
                runs = [(s, [p for (_, p), _ in same]) for s, same in groupby(group, key=lambda w: w[0][0])]
                try:
                    if self._sqlite is not None:
                        await asyncio.get_running_loop().run_in_executor(self._thread, self._commit_sqlite, runs)
                    else:
                        async with self._pg.transaction():
                            for statement, params in runs:
                                await self._pg.executemany(_numbered(statement, "$"), params)
                except Exception as exc:  # every caller gets a 500: the run then fails its check
                    for _, fut in group:
                        fut.set_exception(exc)
                    continue
                for _, fut in group:
                    fut.set_result(None)

    def _commit_sqlite(self, runs: list[tuple[str, list[tuple[Any, ...]]]]) -> None:
        assert self._sqlite is not None
        self._sqlite.execute("BEGIN IMMEDIATE")
        try:
            for statement, params in runs:
                self._sqlite.executemany(_numbered(statement, "?"), params)
            self._sqlite.execute("COMMIT")
        except BaseException:
            self._sqlite.execute("ROLLBACK")
            raise


def _numbered(statement: str, mark: str) -> str:
    """`{0}`, `{1}`, … as the dialect's numbered parameters (`?1` or `$1`, …)."""
    return statement.format(*(f"{mark}{i + 1}" for i in range(statement.count("{"))))


def floor_app(database_url: str, key: str) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    secrets = WebhookSecrets([key.encode()])
    writes = GroupCommit(database_url)

    async def hook(request: Request) -> Response:
        body = await request.body()
        job_id = request.path_params["job_id"]
        presented = request.headers.get("x-webhook-secret", "")
        expected = secrets.derive(job_id, int(request.path_params["attempt"]))
        if not hmac.compare_digest(presented.encode(), expected.encode()):
            return Response(status_code=401)
        orjson.loads(body)
        await writes.write(UPDATE, time.time(), job_id)
        return Response(b'{"status":"applied"}', media_type="application/json")

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        await writes.start()
        try:
            yield
        finally:
            await writes.stop()

    return Starlette(routes=[Route("/webhooks/qubico/{job_id}/{attempt}", hook, methods=["POST"])], lifespan=lifespan)
