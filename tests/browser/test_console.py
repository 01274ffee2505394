"""The operator console as an operator uses it: a real Chromium on a real segflow and sandbox."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from PIL import Image

from service.client import AsyncClient
from service.sandbox.settings import FaultSettings
from tests.browser.chromium import OpenConsole, playwright_expect
from tests.fixtures.sandbox import WebhookRecorder
from tests.fixtures.segflow import TENANT_KEYS

pytestmark = pytest.mark.slow
expect = playwright_expect()

# `make screenshot` sets this to docs/console.png, the README's picture; otherwise it goes to tmp_path.
SCREENSHOT_VARIABLE = "SEGFLOW_CONSOLE_SCREENSHOT"
DONE_S = 30_000  # ms: a small batch through the sandbox, on a busy machine


def items(sb: Any, n: int, prompt: str = "car") -> list[dict[str, Any]]:
    return [{"image": sb.sample_url("street.jpg"), "prompt": f"{prompt} {i}"} for i in range(n)]


async def test_a_batch_appears_and_completes_live(sandbox: Any, segflow: Any, console: OpenConsole) -> None:
    sb = await sandbox(latency_min_s=3.0, latency_max_s=3.0)  # long enough to see it unfinished
    sf = await segflow(sb.url)
    tab = await console(sf.url)
    await tab.sign_in("acme")
    await expect(tab.page.get_by_text("No batches yet")).to_be_visible()

    batch_id = (await sf.client.create_batch(items(sb, 4)))["batch_id"]
    row = tab.page.locator(f'#batches tr[data-batch-id="{batch_id}"]')
    await expect(row.locator(".progress-text")).to_have_text("0/4 done")  # appeared without a reload
    await expect(row.locator(".progress-text")).to_have_text("4/4 done", timeout=DONE_S)
    await expect(row.locator('.chip[data-state="succeeded"]')).to_have_text("succeeded 4")
    await expect(row.locator("td.num")).to_have_text("$0.0400")  # 640x480 samples: $0.01 each
    summary = await sf.client.get_batch(batch_id)
    assert (summary["done"], summary["spend_usd"]) == (4, pytest.approx(0.04))


async def test_a_failed_jobs_error_and_timeline_are_shown_and_retry_sends_it_again(
    sandbox: Any, segflow: Any, console: OpenConsole
) -> None:
    sb = await sandbox(faults=FaultSettings(task_fail=1.0))
    sf = await segflow(sb.url)
    batch_id = (await sf.client.create_batch(items(sb, 2)))["batch_id"]
    tab = await console(sf.url)
    await tab.sign_in("acme", f"#/batches/{batch_id}")

    jobs = tab.page.locator("#jobs tr[data-job-id]")
    await expect(jobs.and_(tab.page.locator('[data-state="failed"]'))).to_have_count(2, timeout=DONE_S)
    [first, _] = await sf.client.all_batch_jobs(batch_id)
    error = (await sf.client.get_job(first["job_id"]))["error"]
    row = tab.page.locator(f'#jobs tr[data-job-id="{first["job_id"]}"]')
    await expect(row.locator("td.error")).to_have_text(f"{error['code']}: {error['message']}")

    await row.get_by_role("button", name="timeline").click()
    timeline = tab.page.locator(f'tr[data-timeline-of="{first["job_id"]}"] li')
    await expect(timeline.first).to_contain_text("accepted")
    await expect(timeline.last).to_contain_text("failed")

    await tab.page.get_by_label("Jobs in state").select_option("succeeded")
    await expect(tab.page.get_by_text("No jobs in this state.")).to_be_visible()
    await tab.page.get_by_label("Jobs in state").select_option("failed")
    await expect(jobs).to_have_count(2)

    sb.engine.set_faults(task_fail=0.0)  # the upstream recovered: a retry can succeed
    await row.get_by_role("button", name="Retry").click()
    await tab.page.get_by_label("Jobs in state").select_option("")
    await expect(row).to_have_attribute("data-state", "succeeded", timeout=DONE_S)
    await expect(row.locator("td.error")).to_have_text("")
    retried = await sf.client.get_job(first["job_id"])
    assert (retried["state"], retried["attempt"], retried["error"]) == ("succeeded", 2, None)
    second = tab.page.locator("#jobs tr[data-job-id]").nth(1)
    await expect(second).to_have_attribute("data-state", "failed")  # only the one clicked was retried


async def test_a_job_in_flight_is_cancelled_from_its_page(sandbox: Any, segflow: Any, console: OpenConsole) -> None:
    sb = await sandbox(latency_min_s=60.0, latency_max_s=60.0)
    sf = await segflow(sb.url)
    [job] = (await sf.client.create_batch(items(sb, 1)))["jobs"]
    tab = await console(sf.url)
    await tab.sign_in("acme", f"#/jobs/{job['job_id']}")
    await expect(tab.page.locator('dl.facts .chip[data-state="submitted"]')).to_be_visible(timeout=DONE_S)
    await tab.page.get_by_role("button", name="Cancel").click()
    await expect(tab.page.locator('dl.facts .chip[data-state="cancelled"]')).to_be_visible()
    await expect(tab.page.get_by_role("button", name="Cancel")).to_have_count(0)
    assert (await sf.client.get_job(job["job_id"]))["state"] == "cancelled"


GREY = (128, 128, 128)
TINT = (255, 0, 200)  # the console's mask colour (MASK_TINT in console.js)


def png(width: int, height: int, color: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, format="PNG")
    return out.getvalue()


def blend(opacity: float) -> tuple[float, ...]:
    return tuple(g * (1 - opacity) + t * opacity for g, t in zip(GREY, TINT, strict=True))


def tinted_share(shot: Image.Image, mask: Image.Image, opacity: float) -> tuple[float, float]:
    """(share of the mask's pixels drawn tinted, share of the other pixels drawn as the bare image),
    each pixel of the screenshot classified by the colour it is nearest to."""
    inside_color = blend(opacity)
    rgb = shot.convert("RGB").tobytes()
    levels = mask.convert("L").resize(shot.size, Image.Resampling.NEAREST).tobytes()
    hits = {True: [0, 0], False: [0, 0]}  # in the mask -> [pixels, pixels drawn as expected]
    for i, level in enumerate(levels):
        pixel = rgb[3 * i : 3 * i + 3]
        to_tint = sum((a - b) ** 2 for a, b in zip(pixel, inside_color, strict=True))
        to_grey = sum((a - b) ** 2 for a, b in zip(pixel, GREY, strict=True))
        inside = level >= 128
        hits[inside][0] += 1
        hits[inside][1] += (to_tint < to_grey) == inside
    return hits[True][1] / max(hits[True][0], 1), hits[False][1] / max(hits[False][0], 1)


async def test_the_mask_is_drawn_over_its_source_image_with_adjustable_opacity(
    sandbox: Any, segflow: Any, console: OpenConsole, tmp_path: Path
) -> None:
    sb = await sandbox()
    sf = await segflow(sb.url)
    image = (await sf.client.upload_input(png(320, 240, GREY), "image/png"))["url"]
    submitted = [
        {"image": image, "prompt": "car, person, bag"},
        {"image": sb.sample_url("street.jpg"), "prompt": "car"},
    ]
    job, street = (await sf.client.create_batch(submitted))["jobs"]
    tab = await console(sf.url)
    await tab.sign_in("acme", f"#/jobs/{job['job_id']}")

    overlay = tab.page.locator('#overlay[data-ready="true"]')
    await expect(overlay).to_be_visible(timeout=DONE_S)
    await expect(tab.page.locator("figcaption")).to_have_text("Prompt: car, person, bag")
    raw_mask = await sf.client.get_job_mask(job["job_id"])
    mask = Image.open(io.BytesIO(raw_mask))
    # The page offers the signed download link, which works with no API key.
    link = await tab.page.locator("#mask-download").get_attribute("href")
    assert link is not None and link.startswith(f"{sf.url}/links/masks/{job['job_id']}/0.png?")
    async with aiohttp.ClientSession() as http, http.get(link) as resp:
        assert resp.status == 200 and await resp.read() == raw_mask
    covered = sum(1 for v in mask.convert("L").tobytes() if v >= 128) / (mask.width * mask.height)
    assert 0.02 < covered < 0.9, covered  # a mask with an inside and an outside to tell apart

    shot = Image.open(io.BytesIO(await overlay.screenshot()))
    assert abs(shot.width - 320) <= 1 and abs(shot.height - 240) <= 1  # the image's own size
    inside_ok, outside_ok = tinted_share(shot, mask, 0.6)
    assert inside_ok > 0.97 and outside_ok > 0.97, (inside_ok, outside_ok)

    await tab.page.get_by_label("Mask opacity").fill("0")
    bare = Image.open(io.BytesIO(await overlay.screenshot()))
    inside_ok, _ = tinted_share(bare, mask, 0.6)
    assert inside_ok < 0.01  # at 0 % the source image shows through untouched

    # A source image on another host (the sandbox's sample) is drawn too; the README shows this page.
    await tab.show(f"#/jobs/{street['job_id']}")
    await expect(tab.page.locator('#overlay[data-ready="true"]')).to_be_visible(timeout=DONE_S)
    assert await tab.page.locator("#overlay img").evaluate("img => img.naturalWidth") == 640
    shot_path = Path(os.environ.get(SCREENSHOT_VARIABLE) or tmp_path / "console.png")
    shot_path.parent.mkdir(parents=True, exist_ok=True)
    await tab.page.screenshot(path=str(shot_path), full_page=True)
    assert Image.open(shot_path).width >= 800


async def test_a_failed_delivery_shows_its_status_code_and_replay_sends_it_again(
    sandbox: Any, segflow: Any, console: OpenConsole, webhook_recorder: WebhookRecorder
) -> None:
    sb = await sandbox()
    # Every first try fails with 500, and the next scheduled try is an hour away: only a replay helps.
    webhook_recorder.script = [500, 500]
    sf = await segflow(sb.url, callback_retry_schedule_s=(3600.0,), callback_interval_s=0.1)
    [job] = (await sf.client.create_batch(items(sb, 1), callback_url=webhook_recorder.endpoint()))["jobs"]
    tab = await console(sf.url)
    await tab.sign_in("acme", "#/events")

    event_row = tab.page.locator("#events tr[data-event-id]").filter(has_text="job.succeeded")
    await expect(event_row).to_have_count(1, timeout=DONE_S)
    event_id = await event_row.get_attribute("data-event-id")
    await event_row.get_by_role("link", name="deliveries").click()
    delivery = tab.page.locator("#deliveries tr[data-delivery-id]")
    await expect(delivery.locator("td.status")).to_have_text("500", timeout=DONE_S)
    await expect(delivery).to_have_attribute("data-state", "pending")

    await tab.page.get_by_role("button", name="Replay").click()
    await expect(delivery.locator("td.status")).to_have_text("200", timeout=DONE_S)
    await expect(delivery).to_have_attribute("data-state", "delivered")
    await expect(delivery.locator(".attempt-log li")).to_have_count(2)
    [after] = (await sf.client.event_deliveries(event_id))["deliveries"]
    assert (after["state"], after["attempts"], after["last_status"]) == ("delivered", 2, 200)
    resent = [r for r in webhook_recorder.received if r.headers.get("webhook-id") == event_id]
    assert [r.answered for r in resent] == [500, 200]
    assert orjson.loads(resent[-1].body)["data"]["job_id"] == job["job_id"]


async def test_another_tenants_batch_is_not_visible(sandbox: Any, segflow: Any, console: OpenConsole) -> None:
    sb = await sandbox()
    sf = await segflow(sb.url)
    async with AsyncClient(sf.url, TENANT_KEYS["globex"]) as globex:
        theirs = (await globex.create_batch(items(sb, 2, "their")))["batch_id"]
    ours = (await sf.client.create_batch(items(sb, 1, "our")))["batch_id"]
    tab = await console(sf.url)

    await tab.sign_in(key="not-a-key")
    await expect(tab.page.get_by_role("alert")).to_have_text("That API key was not accepted. Enter a valid key.")
    await tab.sign_in("acme")
    await expect(tab.page.locator(f'#batches tr[data-batch-id="{ours}"]')).to_be_visible()
    await expect(tab.page.locator("#batches tr[data-batch-id]")).to_have_count(1)
    await tab.show(f"#/batches/{theirs}")
    await expect(tab.page.locator("#notice")).to_have_text("no such batch")
    await expect(tab.page.locator("#jobs tr[data-job-id]")).to_have_count(0)

    other = await console(sf.url)  # the other tenant, in its own tab, sees its batch and not ours
    await other.sign_in("globex")
    await expect(other.page.locator(f'#batches tr[data-batch-id="{theirs}"]')).to_be_visible()
    await expect(other.page.locator("#batches tr[data-batch-id]")).to_have_count(1)


async def test_the_tenants_spend_and_a_paused_balance_guard_are_shown(
    sandbox: Any, segflow: Any, console: OpenConsole
) -> None:
    sb = await sandbox(credit_usd=0.02)
    sf = await segflow(sb.url, balance_reserve_usd=0.0, balance_check_s=0.2)
    await sf.client.set_budget(daily_usd=5.0, monthly_usd=None)
    answer = await sf.client.create_batch(items(sb, 4), max_spend_usd=1.0)
    tab = await console(sf.url)
    await tab.sign_in("acme")
    await expect(tab.page.locator("#creates-paused")).to_contain_text("402", timeout=DONE_S)
    await expect(tab.page.locator("#budget")).to_contain_text("today $0.0200 of $5.0000", timeout=DONE_S)
    await tab.show(f"#/batches/{answer['batch_id']}")
    await expect(tab.page.locator("#batch-cap")).to_have_text("cap $1.0000 (held jobs wait)")
