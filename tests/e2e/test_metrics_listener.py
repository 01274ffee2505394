"""SEGFLOW_METRICS_PORT: `segflow serve` and `segflow worker` processes serve /metrics on a listener
of their own (the public listener no longer does), and both still stop cleanly on SIGTERM."""

from __future__ import annotations

import signal
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.fixtures.processes import Processes, free_port

pytestmark = pytest.mark.slow


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def test_metrics_on_their_own_port_for_serve_and_worker(processes: Processes, tmp_path: Path) -> None:
    port, serve_metrics, worker_metrics = free_port(), free_port(), free_port()
    env = {
        "SEGFLOW_PORT": str(port),
        "SEGFLOW_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "SEGFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'segflow.db'}",
        "SEGFLOW_ARTIFACT_DIR": str(tmp_path / "artifacts"),
        "SEGFLOW_UPSTREAM_URL": f"http://127.0.0.1:{free_port()}",
        "SEGFLOW_UPSTREAM_IS_SANDBOX": "true",
        "SEGFLOW_UPSTREAM_API_KEY": "sandbox-key",
        "SEGFLOW_WEBHOOK_KEYS": "metrics-webhook-master-key-0123456789",
        "SEGFLOW_LOG_LEVEL": "warning",
    }
    server = processes.start(
        "serve",
        ["serve", "--no-workers"],
        {**env, "SEGFLOW_METRICS_PORT": str(serve_metrics)},
        f"http://127.0.0.1:{port}/healthz",
    )
    assert get(f"http://127.0.0.1:{port}/metrics")[0] == 404
    status, text = get(f"http://127.0.0.1:{serve_metrics}/metrics")
    assert status == 200 and "segflow_build_info{" in text and 'segflow_jobs{state="queued"} 0.0' in text
    assert get(f"http://127.0.0.1:{serve_metrics}/v1/batches")[0] == 404  # the API is not on it

    worker = processes.start(
        "worker",
        ["worker", "--role", "reconciler"],
        {**env, "SEGFLOW_METRICS_PORT": str(worker_metrics)},
        f"http://127.0.0.1:{worker_metrics}/metrics",
    )
    status, text = get(f"http://127.0.0.1:{worker_metrics}/metrics")
    assert status == 200 and "process_cpu_seconds_total" in text and "segflow_store_up 1.0" in text

    for proc in (worker, server):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
