"""The chaos soak's short profile, in CI: replicas killed, connections terminated, every sandbox
fault on, and not one of segflow's promises broken (`make chaos` runs the long profile)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.load import load
from tests.chaos.runner import PROFILES, soak
from tests.fixtures.database import DSN_VARIABLE, postgres_dsn

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.mark.postgres
async def test_short_chaos_soak_keeps_every_promise(tmp_path: Path) -> None:
    dsn = postgres_dsn()
    if dsn is None:
        pytest.skip(f"needs {DSN_VARIABLE} (CI sets it)")
    report = await soak(PROFILES["short"], seed=7, workdir=tmp_path, admin_dsn=dsn)
    print(report.render())
    assert report.ok, report.violations[:20]
    # The run really was hostile, and everything still ended.
    assert report.replica_kills + report.replica_stops >= 2
    assert report.db_connections_killed > 0
    assert sum(1 for n in report.faults_injected.values() if n) >= 8
    assert sum(report.states.values()) == PROFILES["short"].jobs
    assert report.masks_checked == report.states["succeeded"] > 0
    assert report.acked_completions > 0
    # The kills caught creates under way: claims never sent went back to queued (never `unknown`,
    # which check_run reports otherwise), creates in flight were settled by the history (a second
    # paid task after the history's answer is a violation too).
    assert report.claims_lapsed + report.adopted_from_history + report.resends_after_history > 0


@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_webhooks_at_full_rate_while_every_role_works(tmp_path: Path, database: str) -> None:
    dsn = postgres_dsn()
    if database == "postgres" and dsn is None:
        pytest.skip(f"needs {DSN_VARIABLE} (CI sets it)")
    report = await load(database, 8.0, tmp_path, dsn or "")
    print(report.render())
    assert report.ok, report.violations[:20]
    assert report.sent > 1000 and report.errors == 0
    assert report.recorded == report.sent
    assert report.real_jobs == {"succeeded": 300}
