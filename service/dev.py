"""`segflow dev`: the sandbox upstream and segflow (API, console, every worker) on one SQLite file,
in one command, until Ctrl-C. Prints the API key, the console URL and a `curl` that submits.

The key and the webhook master key are kept in the data folder (`dev.json`, readable by the user
only), so a restart keeps working with what was submitted before.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shlex
import signal
import socket
import sys
from dataclasses import replace
from pathlib import Path

from service.app import create_app
from service.context import open_services
from service.demo import DEMO_FAULTS, demo_settings
from service.logs import configure_logging
from service.sandbox.app import create_sandbox_app
from service.sandbox.settings import FaultSettings, SandboxSettings
from service.serving import bind_socket, serve_in_loop
from service.workers import ALL_ROLES


def _identity(data: Path) -> dict[str, str]:
    """The dev API key and webhook key: made on first run, then reused."""
    path = data / "dev.json"
    if path.exists():
        found: dict[str, str] = json.loads(path.read_text())
        return found
    made = {"api_key": "sk_dev_" + secrets.token_urlsafe(24), "webhook_key": secrets.token_urlsafe(32)}
    path.touch(mode=0o600)
    path.write_text(json.dumps(made))
    return made


def _bind(port: int) -> socket.socket:
    try:
        return bind_socket(port=port)
    except OSError as exc:
        raise SystemExit(f"segflow dev: cannot listen on 127.0.0.1:{port}: {exc.strerror} (try --port 0)") from None


async def run_dev(*, port: int = 8600, sandbox_port: int = 0, data: str = ".segflow/dev", faults: bool = False) -> int:
    folder = Path(data)
    folder.mkdir(parents=True, exist_ok=True)
    identity = _identity(folder)
    configure_logging("console", "warning")
    sandbox_sock = _bind(sandbox_port)
    segflow_sock = _bind(port)
    sandbox_url = f"http://127.0.0.1:{sandbox_sock.getsockname()[1]}"
    segflow_url = f"http://127.0.0.1:{segflow_sock.getsockname()[1]}"
    sandbox_settings = SandboxSettings(
        port=int(sandbox_url.rsplit(":", 1)[1]),
        public_url=sandbox_url,
        latency_min_s=0.3,
        latency_max_s=2.0,
        webhook_retry_interval_s=0.5,
        faults=DEMO_FAULTS if faults else FaultSettings(),
    )
    settings = replace(
        demo_settings(folder, segflow_url, sandbox_url, identity["api_key"]),
        webhook_keys=(identity["webhook_key"],),
        api_keys=(f"dev:{identity['api_key']}",),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with serve_in_loop(create_sandbox_app(sandbox_settings), sock=sandbox_sock):
        services = await open_services(settings)
        try:
            async with serve_in_loop(create_app(services, roles=ALL_ROLES), sock=segflow_sock):
                _banner(segflow_url, sandbox_url, identity["api_key"], folder)
                await stop.wait()
        finally:
            await services.close()
    print("segflow dev: stopped", file=sys.stderr)
    return 0


def _banner(segflow_url: str, sandbox_url: str, api_key: str, folder: Path) -> None:
    body = json.dumps({"items": [{"image": f"{sandbox_url}/samples/street.jpg", "prompt": "car"}]})
    curl = " ".join(
        [
            "curl -s -X POST",
            shlex.quote(f"{segflow_url}/v1/batches"),
            "-H",
            shlex.quote(f"authorization: Bearer {api_key}"),
            "-H 'content-type: application/json'",
            "-d",
            shlex.quote(body),
        ]
    )
    lines = [
        "segflow dev is up (Ctrl-C stops it)",
        f"  API        {segflow_url}",
        f"  API key    {api_key}",
        f"  console    {segflow_url}/console",
        f"  sandbox    {sandbox_url} (synthetic masks)",
        f"  data       {folder.resolve()} (SQLite, masks)",
        "",
        "submit a job:",
        f"  {curl}",
        "or with the CLI:",
        f"  SEGFLOW_API_URL={segflow_url} SEGFLOW_API_KEY={api_key} segflow submit "
        f"{sandbox_url}/samples/street.jpg --prompt car --wait",
    ]
    print("\n".join(lines), flush=True)
