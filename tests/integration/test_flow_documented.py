"""segflow end to end against the sandbox with every documented upstream behaviour switched on at
once: over-limit creates staged (segflow's max_in_flight above the account's limit), tasks cancelled
outside segflow in both spellings, masks only under temporary URLs, inline base64 masks, several
masks per task, bad images failing after the create, the documented empty create status. Every
job must end, nothing may be paid twice beyond what the invariants allow, and each failed job
must carry the code that says why."""

from __future__ import annotations

import hashlib
from typing import Any

import aiohttp

from service.invariants import check_run
from service.sandbox.settings import FaultSettings
from service.webhook_secrets import job_of_endpoint
from tests.fixtures.sandbox import ImageHost, RunningSandbox, image_bytes
from tests.fixtures.segflow import TENANT_KEYS, RunningSegflow
from tests.integration.test_flow import SAMPLES, sandbox_tasks, wait_done

DOCUMENTED = FaultSettings(
    external_cancel=0.08, temporary_urls=0.3, base64_outputs=0.2, multi_mask=0.25, multi_mask_count=3
)
N_GOOD = 48


def items(sb: RunningSandbox, bad: list[str]) -> list[dict[str, Any]]:
    good = [
        {"image": sb.sample_url(SAMPLES[i % 3]), "prompt": f"thing {i}", "segment_factor": i % 5 - 2}
        for i in range(N_GOOD)
    ]
    return good + [{"image": url, "prompt": f"bad {i}"} for i, url in enumerate(bad)]


async def test_every_documented_behaviour_at_once_ends_every_job_with_the_right_code(
    sandbox: Any, segflow: Any, image_host: ImageHost
) -> None:
    # Outputs through a redirect from a second host name: both names are on the fetcher's host list
    # (the sandbox's own is added for it), and every hop is checked against it.
    sb = await sandbox(
        output_redirect_host="localhost",
        faults=DOCUMENTED,
        seed=5,
        latency_min_s=0.05,
        latency_max_s=0.3,
        concurrency_limit=4,
        over_limit="stage",
        create_status="",
        bad_image="fail",
        cancel="documented",
    )
    sf: RunningSegflow = await segflow(
        sb.url, max_in_flight=12, staged_poll_after_s=1.0, max_attempts=5, output_hosts=("localhost",)
    )
    bad = [
        image_host.add("wide.png", image_bytes(4000, 10)),
        image_host.add("anim.gif", image_bytes(20, 20, "GIF"), "image/gif"),
        f"{image_host.url}/absent.png",
    ]
    answer = await sf.client.create_batch(items(sb, bad))
    job_ids = [j["job_id"] for j in answer["jobs"]]
    summary = await wait_done(sf, answer["batch_id"], 120)

    tasks = await sandbox_tasks(sb)
    report = await check_run(sf.store, sf.services.artifacts, job_ids, tasks)
    assert report.ok, report.violations[:10]
    assert report.duplicate_paid_tasks <= report.resends_after_adoption_window
    stats = sb.engine.stats_json()
    assert stats["tasks_staged"] > 0  # the account limit was hit and creates were staged, not refused
    assert stats["creates_rejected"].get("429", 0) == 0
    for variant in ("external_cancel", "temporary_urls", "base64_outputs", "multi_mask"):
        assert stats["faults"][variant] > 0, variant
    served = [t["output_url"] for t in tasks if t["output_url"]]
    assert served and all(u.startswith("http://localhost:") for u in served)  # every URL was a redirect

    by_job: dict[str, list[dict[str, Any]]] = {}
    for t in tasks:
        by_job.setdefault(job_of_endpoint(t["webhook_endpoint"] or "") or "", []).append(t)
    codes: dict[str, str] = {}
    for job_id in job_ids:
        job = await sf.client.get_job(job_id)
        last = by_job[job_id][-1]
        if job["state"] == "failed":
            codes[job_id] = job["error"]["code"]
            expected = "upstream_cancelled" if last["status"] in ("cancelled", "canceled") else "invalid_image"
            assert job["error"]["code"] == expected, (job["error"], last["status"], last["error_message"])
            assert len(by_job[job_id]) == 1  # neither is sent again on its own
        else:
            assert job["state"] == "succeeded", job["state"]
            masks = last["mask_sha256s"]
            assert [a["sha256"] for a in job.get("artifacts") or [job["artifact"]]] == masks
    bad_jobs = job_ids[N_GOOD:]
    assert all(codes.get(j) == "invalid_image" for j in bad_jobs)
    assert (
        list(codes.values()).count("upstream_cancelled")
        == sum(1 for t in tasks if t["status"] in ("cancelled", "canceled"))
        > 0
    )
    assert summary["counts"]["succeeded"] + summary["counts"]["failed"] == len(job_ids)

    async with aiohttp.ClientSession() as http:  # the second mask of a multi-mask job is served too
        multi = next(j for j in job_ids if len(by_job[j][-1]["mask_sha256s"]) > 1 and j not in codes)
        async with http.get(
            f"{sf.url}/v1/jobs/{multi}/mask?index=1", headers={"authorization": f"Bearer {TENANT_KEYS['acme']}"}
        ) as resp:
            assert resp.status == 200
            assert hashlib.sha256(await resp.read()).hexdigest() == by_job[multi][-1]["mask_sha256s"][1]


async def test_masks_served_through_a_redirect_from_a_second_host_name_are_stored(sandbox: Any, segflow: Any) -> None:
    """Output URLs on a second host name answering 302 to the sandbox: with both names on the host
    list, each hop checked by the URL guard, the masks are stored."""
    sb = await sandbox(output_redirect_host="localhost", latency_min_s=0.05, latency_max_s=0.2)
    sf: RunningSegflow = await segflow(sb.url, output_hosts=("localhost",))
    answer = await sf.client.create_batch(items(sb, [])[:6])
    summary = await wait_done(sf, answer["batch_id"], 60)
    assert summary["counts"]["succeeded"] == 6, summary["counts"]
    report = await check_run(
        sf.store, sf.services.artifacts, [j["job_id"] for j in answer["jobs"]], await sandbox_tasks(sb)
    )
    assert report.ok and report.masks_checked == 6
    assert all(t["output_url"].startswith("http://localhost:") for t in await sandbox_tasks(sb))
