"""The `segflow` command line as a user runs it: real processes, real ports."""

from __future__ import annotations

import asyncio
import hashlib
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.serving import serve_in_loop
from tests.fixtures.processes import SEGFLOW, Processes, free_port

pytestmark = pytest.mark.slow

API_KEY = "cli-tenant-key-0123456789abcdef"


def segflow_env(tmp_path: Path, port: int, sandbox_url: str) -> dict[str, str]:
    return {
        "SEGFLOW_PORT": str(port),
        "SEGFLOW_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "SEGFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'segflow.db'}",
        "SEGFLOW_ARTIFACT_DIR": str(tmp_path / "artifacts"),
        "SEGFLOW_UPSTREAM_URL": sandbox_url,
        "SEGFLOW_UPSTREAM_API_KEY": "sandbox-key",
        "SEGFLOW_UPSTREAM_IS_SANDBOX": "true",
        "SEGFLOW_ALLOW_PRIVATE_IMAGE_URLS": "true",
        "SEGFLOW_WEBHOOK_KEYS": "cli-webhook-master-key-0123456789",
        "SEGFLOW_API_KEYS": f"cli:{API_KEY}",
        "SEGFLOW_POLL_AFTER_S": "1",
        "SEGFLOW_RECONCILE_INTERVAL_S": "0.2",
        "SEGFLOW_LOG_LEVEL": "warning",
    }


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [*SEGFLOW, *args],
        env={**os.environ, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


async def test_sandbox_command_serves_the_contract_and_delivers_webhooks(processes: Processes) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    processes.start(
        "sandbox",
        ["sandbox", "--port", str(port), "--latency-min", "0", "--latency-max", "0.2"],
        {},
        f"{url}/samples",
    )
    received: list[tuple[str, dict[str, Any]]] = []
    done = asyncio.Event()

    async def hook(request: Request) -> Response:
        body = orjson.loads(await request.body())
        received.append((request.headers.get("x-webhook-secret", ""), body))
        if body["data"]["status"] == "completed":
            done.set()
        return Response(status_code=200)

    async with serve_in_loop(Starlette(routes=[Route("/hook", hook, methods=["POST"])])) as listener:
        create = {
            "model": "Qubico/image-toolkit",
            "task_type": "segment",
            "input": {
                "image": f"{url}/samples/street.jpg",
                "prompt": "car",
                "negative_prompt": "",
                "segment_factor": -15,
            },
            "config": {"webhook_config": {"endpoint": f"{listener}/hook", "secret": "s3cret-for-test"}},
        }
        async with aiohttp.ClientSession(headers={"x-api-key": "sandbox-key"}) as http:
            async with http.post(f"{url}/api/v1/task", json=create) as resp:
                assert resp.status == 200
                created = await resp.json()
            assert created["code"] == 200 and created["data"]["status"] == ""  # as documented
            assert created["data"]["output"] is None
            task_id = created["data"]["task_id"]
            await asyncio.wait_for(done.wait(), 20)
            async with http.get(f"{url}/api/v1/task/{task_id}") as resp:
                got = await resp.json()
            async with http.get(f"{url}/api/v1/task/{task_id}", headers={"x-api-key": "wrong"}) as resp:
                assert resp.status == 401
                assert (await resp.json())["data"] is None
            mask_url = got["data"]["output"]["image_url"]
            async with http.get(mask_url) as resp:
                assert resp.status == 200 and resp.content_type == "image/png"
                mask = await resp.read()
    assert got["data"]["status"] == "completed"
    assert got["data"]["output"]["image_urls"] == [mask_url]
    assert got["data"]["meta"]["ended_at"] != "0001-01-01T00:00:00Z"
    statuses = [body["data"]["status"] for _, body in received]
    assert statuses[0] == "pending" and statuses[-1] == "completed"
    assert {secret for secret, _ in received} == {"s3cret-for-test"}
    assert all(body["data"]["task_id"] == task_id and isinstance(body["timestamp"], int) for _, body in received)
    assert hashlib.sha256(mask).hexdigest() == next(
        t["mask_sha256"] for t in await _tasks(url) if t["task_id"] == task_id
    )


async def _tasks(url: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/_sandbox/tasks") as resp:
        return list(await resp.json())


async def test_submit_wait_status_and_results(processes: Processes, tmp_path: Path) -> None:
    sandbox_port, port = free_port(), free_port()
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    processes.start(
        "sandbox",
        ["sandbox", "--port", str(sandbox_port), "--latency-min", "0", "--latency-max", "0.3"],
        {},
        f"{sandbox_url}/samples",
    )
    env = segflow_env(tmp_path, port, sandbox_url)
    processes.start("serve", ["serve"], env, f"http://127.0.0.1:{port}/healthz")
    client_env = {"SEGFLOW_API_URL": f"http://127.0.0.1:{port}", "SEGFLOW_API_KEY": API_KEY}
    # A local file (uploaded to segflow and served to the upstream) and a URL, two prompts each.
    local = tmp_path / "photo.jpg"
    async with aiohttp.ClientSession() as http, http.get(f"{sandbox_url}/samples/portrait.jpg") as resp:
        local.write_bytes(await resp.read())
    submitted = await asyncio.to_thread(
        run_cli,
        "submit",
        str(local),
        f"{sandbox_url}/samples/street.jpg",
        "--prompt",
        "person",
        "--prompt",
        "car,road",
        "--wait",
        "--timeout",
        "60",
        env=client_env,
    )
    assert submitted.returncode == 0, submitted.stderr + submitted.stdout
    assert "4 jobs" in submitted.stdout and "succeeded" in submitted.stdout
    batch_id = submitted.stdout.split("batch ", 1)[1].split()[0]
    status = await asyncio.to_thread(run_cli, "status", batch_id, env=client_env)
    assert status.returncode == 0 and "4/4 done" in status.stdout
    out = tmp_path / "masks"
    results = await asyncio.to_thread(run_cli, "results", batch_id, "--out", str(out), env=client_env)
    assert results.returncode == 0, results.stderr
    assert re.search(r"masks saved\W+4\b", results.stdout), results.stdout  # the closing summary table
    masks = sorted(out.glob("*.png"))
    assert len(masks) == 4
    assert all(m.read_bytes().startswith(b"\x89PNG") for m in masks)


async def test_http_and_workers_in_separate_processes_on_one_sqlite_file(processes: Processes, tmp_path: Path) -> None:
    sandbox_port, port = free_port(), free_port()
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    processes.start(
        "sandbox",
        ["sandbox", "--port", str(sandbox_port), "--latency-min", "0", "--latency-max", "0.3"],
        {},
        f"{sandbox_url}/samples",
    )
    env = segflow_env(tmp_path, port, sandbox_url)
    processes.start("http", ["serve", "--no-workers"], env, f"http://127.0.0.1:{port}/healthz")
    worker = run_background(env, "worker", "--role", "submitter", "--role", "reconciler", "--role", "fetcher")
    processes.running.append(worker)
    csv_file = tmp_path / "jobs.csv"
    csv_file.write_text(
        "image,prompt,negative_prompt,segment_factor\n"
        + "".join(f"{sandbox_url}/samples/shapes.png,shape {i},,{i}\n" for i in range(6))
    )
    client_env = {"SEGFLOW_API_URL": f"http://127.0.0.1:{port}", "SEGFLOW_API_KEY": API_KEY}
    submitted = await asyncio.to_thread(
        run_cli, "submit", "--csv", str(csv_file), "--wait", "--timeout", "60", env=client_env
    )
    assert submitted.returncode == 0, submitted.stderr + submitted.stdout
    assert "6 jobs" in submitted.stdout and "succeeded" in submitted.stdout


def run_background(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    import os

    return subprocess.Popen(
        [*SEGFLOW, *args], env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


async def test_keys_create_makes_a_working_key(processes: Processes, tmp_path: Path) -> None:
    sandbox_port, port = free_port(), free_port()
    env = segflow_env(tmp_path, port, f"http://127.0.0.1:{sandbox_port}")
    created = await asyncio.to_thread(run_cli, "keys", "create", "--tenant", "newco", env=env)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("sk_") and key not in (tmp_path / "segflow.db").read_bytes().decode(errors="ignore")
    processes.start("serve", ["serve"], env, f"http://127.0.0.1:{port}/healthz")
    async with aiohttp.ClientSession() as http:
        async with http.get(
            f"http://127.0.0.1:{port}/v1/batches/nope", headers={"authorization": f"Bearer {key}"}
        ) as resp:
            assert resp.status == 404  # authenticated (not 401); the batch just doesn't exist
        async with http.get(
            f"http://127.0.0.1:{port}/v1/batches/nope",
            headers={"authorization": "Bearer sk_not-a-key-at-all"},
        ) as resp:
            assert resp.status == 401


async def test_invalid_configuration_stops_start_up_naming_the_option(tmp_path: Path) -> None:
    result = await asyncio.to_thread(run_cli, "serve", env={"SEGFLOW_MAX_IN_FLIGHT": "lots"})
    assert result.returncode == 2
    assert "SEGFLOW_MAX_IN_FLIGHT" in result.stderr
    missing = await asyncio.to_thread(
        run_cli,
        "serve",
        env={"SEGFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}", "SEGFLOW_WEBHOOK_KEYS": ""},
    )
    assert missing.returncode == 2 and "SEGFLOW_WEBHOOK_KEYS" in missing.stderr


async def test_migrate_is_idempotent(tmp_path: Path) -> None:
    env = {"SEGFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'm.db'}"}
    first = await asyncio.to_thread(run_cli, "migrate", env=env)
    second = await asyncio.to_thread(run_cli, "migrate", env=env)
    assert first.returncode == second.returncode == 0
    assert "schema up to date" in second.stdout


async def test_demo_ends_with_every_job_ended_and_no_duplicate_paid(tmp_path: Path) -> None:
    result = await asyncio.to_thread(run_cli, "demo", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "every job ended, 0 duplicates paid" in result.stdout
    assert "creates staged over the account limit" in result.stdout
    assert "succeeded" in result.stdout and "duplicates paid" in result.stdout
    assert list((tmp_path / ".segflow").glob("demo-*/artifacts/demo/*/0.png"))


def test_cli_help_lists_every_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "--help"], capture_output=True, text=True, check=False
    )
    for command in ("serve", "worker", "sandbox", "submit", "status", "results", "demo", "migrate", "keys"):
        assert command in result.stdout


async def test_cli_for_scripts_json_exit_codes_error_lines_and_split_csv(processes: Processes, tmp_path: Path) -> None:
    """What a script relies on: JSON on stdout, documented exit codes, one error line on stderr."""
    sandbox_port, port = free_port(), free_port()
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    processes.start(
        "sandbox",
        ["sandbox", "--port", str(sandbox_port), "--latency-min", "0", "--latency-max", "0.2"],
        {},
        f"{sandbox_url}/samples",
    )
    processes.start("serve", ["serve"], segflow_env(tmp_path, port, sandbox_url), f"http://127.0.0.1:{port}/healthz")
    client_env = {"SEGFLOW_API_URL": f"http://127.0.0.1:{port}", "SEGFLOW_API_KEY": API_KEY}
    good = tmp_path / "good.csv"
    good.write_text("image,prompt\n" + "".join(f"{sandbox_url}/samples/shapes.png,shape {i}\n" for i in range(5)))

    async def cli(*args: str, env: dict[str, str] = client_env) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(run_cli, *args, env=env)

    # Five rows, batches of two: three batches, one run, one JSON document; rerun: the same batches.
    run = ["submit", "--csv", str(good), "--batch-size", "2", "--idempotency-key", "nightly-7", "--output", "json"]
    first = await cli(*run, "--wait", "--timeout", "60")
    assert first.returncode == 0, first.stderr
    report = orjson.loads(first.stdout)
    assert [b["jobs"] for b in report["batches"]] == [2, 2, 1] and report["total"] == 5
    assert report["counts"]["succeeded"] == 5 and report["without_mask"] == 0 and report["timed_out"] is False
    again = orjson.loads((await cli(*run)).stdout)
    assert [b["batch_id"] for b in again["batches"]] == [b["batch_id"] for b in report["batches"]]
    ids = [b["batch_id"] for b in report["batches"]]
    status = await cli("status", *ids, "--output", "json")
    assert status.returncode == 0 and orjson.loads(status.stdout)["done"] == 5
    out = tmp_path / "masks"
    results = await cli("results", *ids, "--out", str(out), "--output", "json")
    saved = orjson.loads(results.stdout)["saved"]
    assert results.returncode == 0 and len(saved) == 5
    assert all(Path(s["file"]).read_bytes().startswith(b"\x89PNG") for s in saved)
    # Each saved mask's signed link downloads the same bytes with no API key; the manifest is kept.
    async with aiohttp.ClientSession() as http, http.get(saved[0]["download_url"]) as r:
        assert r.status == 200 and await r.read() == Path(saved[0]["file"]).read_bytes()
    kept = [orjson.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(k["job_id"] for k in kept) == sorted(s["job_id"] for s in saved)

    # Jobs that fail: exit 1 (the image cannot be fetched by the upstream).
    broken = tmp_path / "broken.csv"
    broken.write_text(f"image,prompt\n{sandbox_url}/samples/no-such-image.png,car\n")
    failed = await cli("submit", "--csv", str(broken), "--wait", "--timeout", "60", "--output", "json")
    assert failed.returncode == 1, failed.stderr
    assert orjson.loads(failed.stdout)["without_mask"] == 1
    assert (await cli("status", orjson.loads(failed.stdout)["batches"][0]["batch_id"])).returncode == 1

    # Bad CSV rows: exit 2, each named by its line, nothing submitted, no traceback.
    bad = tmp_path / "bad.csv"
    bad.write_text(f"image,prompt,segment_factor\n{sandbox_url}/a.png,car,1\n,car,2\n{sandbox_url}/b.png,,x\n")
    refused_csv = await cli("submit", "--csv", str(bad))
    assert refused_csv.returncode == 2 and "Traceback" not in refused_csv.stderr
    lines = refused_csv.stderr.strip().splitlines()
    assert lines == [
        f"segflow: {bad}: line 3: no image",
        f"segflow: {bad}: line 4: no prompt, segment_factor 'x' is not an integer",
    ]
    # The server refuses: exit 3, one line with the status and code (and a 422's problem by line).
    wrong_key = await cli("status", ids[0], env={**client_env, "SEGFLOW_API_KEY": "nope"})
    assert wrong_key.returncode == 3 and wrong_key.stderr.count("\n") == 1
    assert wrong_key.stderr.startswith("segflow: refused: 401 ")
    private = tmp_path / "private.csv"
    private.write_text("image,prompt\nftp://example.com/x.png,car\n")
    invalid = await cli("submit", "--csv", str(private))
    assert invalid.returncode == 3 and "422 invalid_request" in invalid.stderr and "line 2.image" in invalid.stderr
    # Nobody listening: exit 4, one line.
    nobody = await cli("status", ids[0], env={**client_env, "SEGFLOW_API_URL": f"http://127.0.0.1:{free_port()}"})
    assert nobody.returncode == 4 and nobody.stderr.startswith("segflow: cannot reach segflow at")
    assert "Traceback" not in nobody.stderr + wrong_key.stderr + invalid.stderr


async def test_dev_serves_sandbox_and_segflow_until_interrupted(tmp_path: Path) -> None:
    """`segflow dev` prints a key, the console and a curl; the curl's request is done end to end."""
    import signal

    port = free_port()
    proc = start_dev(port, tmp_path / "dev")
    try:
        banner: list[str] = []
        while not any(line.startswith("  curl ") for line in banner):
            line = await asyncio.to_thread(proc.stdout.readline)  # type: ignore[union-attr]
            assert line, f"dev exited: {proc.wait()} {proc.stderr.read()}"  # type: ignore[union-attr]
            banner.append(line)
        text = "".join(banner)
        key = re.search(r"API key\s+(\S+)", text).group(1)  # type: ignore[union-attr]
        assert f"http://127.0.0.1:{port}/console" in text
        curl = next(line for line in banner if line.startswith("  curl ")).strip()
        posted = await asyncio.to_thread(
            subprocess.run, ["bash", "-c", curl], capture_output=True, text=True, timeout=30, check=False
        )
        batch = orjson.loads(posted.stdout)
        async with aiohttp.ClientSession() as http:
            from tests.fixtures.processes import wait_batch

            url = f"http://127.0.0.1:{port}/v1/batches/{batch['batch_id']}"
            summary = await wait_batch(http, url, key, lambda b: b["done"] == b["total"], 60)
            async with http.get(f"http://127.0.0.1:{port}/console") as resp:
                assert resp.status == 200
        assert summary["counts"]["succeeded"] == 1
        proc.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def start_dev(port: int, data: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*SEGFLOW, "dev", "--port", str(port), "--data", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
