"""A `segflow serve` process SIGKILLed between the state changes and their deliveries still
delivers every event after a restart, with the same webhook-id; the CLI shows each attempt."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.serving import serve_in_loop
from tests.e2e.test_cli import API_KEY, run_cli, segflow_env
from tests.fixtures.processes import Processes, free_port

pytestmark = pytest.mark.slow


async def test_events_outlive_a_sigkill_and_are_delivered_after_restart(processes: Processes, tmp_path: Path) -> None:
    open_ = {"yes": False}
    received: list[tuple[str, int]] = []

    async def hook(request: Request) -> Response:
        status = 200 if open_["yes"] else 500
        received.append((request.headers["webhook-id"], status))
        return Response(status_code=status)

    sandbox_port, port = free_port(), free_port()
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    processes.start(
        "sandbox",
        ["sandbox", "--port", str(sandbox_port), "--latency-min", "0", "--latency-max", "0.2"],
        {},
        f"{sandbox_url}/samples",
    )
    env = segflow_env(tmp_path, port, sandbox_url) | {
        "SEGFLOW_CALLBACK_RETRY_SCHEDULE_S": ",".join(["0.3"] * 40),
        "SEGFLOW_CALLBACK_INTERVAL_S": "0.1",
    }
    async with serve_in_loop(Starlette(routes=[Route("/hook", hook, methods=["POST"])])) as receiver:
        first = processes.start("serve-1", ["serve"], env, f"http://127.0.0.1:{port}/healthz")
        items = [{"image": f"{sandbox_url}/samples/street.jpg", "prompt": f"p{i}"} for i in range(5)]
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"http://127.0.0.1:{port}/v1/batches",
                json={"items": items, "callback_url": f"{receiver}/hook"},
                headers={"authorization": f"Bearer {API_KEY}"},
            ) as resp,
        ):
            assert resp.status == 202
        deadline = asyncio.get_running_loop().time() + 60
        while len({m for m, _ in received}) < 6:  # every event exists and has failed at least once
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        processes.kill(first, signal.SIGKILL)
        open_["yes"] = True
        processes.start("serve-2", ["serve"], env, f"http://127.0.0.1:{port}/healthz")
        while len({m for m, status in received if status == 200}) < 6:
            assert asyncio.get_running_loop().time() < deadline + 60
            await asyncio.sleep(0.05)
    ids = {m for m, _ in received}
    assert len(ids) == 6  # retries and the restart reused each event's webhook-id
    client_env = {"SEGFLOW_API_URL": f"http://127.0.0.1:{port}", "SEGFLOW_API_KEY": API_KEY}
    event_id = sorted(ids)[0]
    shown = await asyncio.to_thread(run_cli, "events", "deliveries", event_id, env=client_env)
    assert shown.returncode == 0, shown.stderr
    assert "500" in shown.stdout and "200" in shown.stdout and "delivered" in shown.stdout
    replay = await asyncio.to_thread(run_cli, "events", "replay", event_id, env=client_env)
    assert replay.returncode == 0 and "0 deliveries queued again" in replay.stdout  # it was delivered
    replay = await asyncio.to_thread(run_cli, "events", "replay", "--all", event_id, env=client_env)
    assert replay.returncode == 0 and "1 deliveries queued again" in replay.stdout
