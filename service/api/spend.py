"""Spend routes: estimate a would-be batch, read and set the tenant's caps, see what it spent and
whether creates are paused."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from starlette.responses import Response

from service.api.bodies import MAX_SPEND_USD, decode_batch, read_json
from service.api.endpoint import Call
from service.api.errors import Problem, invalid
from service.api.responses import json_response
from service.preflight import Preflight, check_image
from service.spend import WORST_CASE_USD, tightest
from service.store import AccountState
from service.urlguard import GuardedSession

_CHECKS_AT_ONCE = 16


async def estimate(call: Call) -> Response:
    """POST /v1/estimates: a batch body (as for POST /v1/batches), nothing stored: its jobs, pixels
    and price, and the inputs the preflight would refuse. Images whose size could not be read in
    time are priced at the worst case and counted in `unknown_size`."""
    s = call.services.settings
    request = decode_batch(await read_json(call.request, s.max_request_body), s)
    images = list(dict.fromkeys(item.image for item in request.items))
    found: dict[str, Preflight] = {}
    if s.preflight:
        http = GuardedSession(s.allow_private_image_urls, limit=_CHECKS_AT_ONCE)
        gate = asyncio.Semaphore(_CHECKS_AT_ONCE)

        async def one(url: str) -> None:
            async with gate:
                found[url] = await check_image(call.services, http.get(), url)

        try:
            # One time limit for the whole estimate: a slow host makes sizes unknown, not the answer late.
            await asyncio.wait_for(asyncio.gather(*(one(u) for u in images)), s.preflight_timeout_s)
        except TimeoutError:
            pass
        finally:
            await http.close()
    pixels, usd, unknown = 0, 0.0, 0
    refused: list[dict[str, Any]] = []
    for i, item in enumerate(request.items):
        p = found.get(item.image, Preflight())
        if p.refused:
            refused.append({"index": i, "image": item.image, "reason": p.refused})
            continue
        pixels += p.pixels or 0
        unknown += p.pixels is None
        usd += p.estimate_usd
    return json_response(
        {
            "jobs": len(request.items),
            "pixels": pixels,
            "estimate_usd": round(usd, 2),
            "unknown_size": unknown,
            "worst_case_usd_per_job": WORST_CASE_USD,
            "refused": refused,
            "max_spend_usd": request.max_spend_usd,
            "fits": request.max_spend_usd is None or usd <= request.max_spend_usd + 1e-9,
        }
    )


async def get_budget(call: Call) -> Response:
    """GET /v1/budget: the tenant's caps, what it spent (settled plus reserved) today and this
    month (UTC), and whether creates are paused by the balance guard."""
    return json_response(await _budget_view(call))


async def set_budget(call: Call) -> Response:
    """PUT /v1/budget: the tenant's own daily and monthly caps (null: none of its own). The
    operator's caps (tenant_daily_usd, tenant_monthly_usd) still apply when lower."""
    doc = await read_json(call.request, call.services.settings.max_request_body)
    caps = _caps(doc)
    await call.services.store.set_tenant_budget(call.tenant, caps["daily_usd"], caps["monthly_usd"])
    return json_response(await _budget_view(call))


def _caps(doc: Any) -> dict[str, float | None]:
    problems: list[Problem] = []
    if not isinstance(doc, dict):
        raise invalid([Problem("", "the body must be a JSON object")])
    for key in doc.keys() - {"daily_usd", "monthly_usd"}:
        problems.append(Problem(key, "unknown field"))
    out: dict[str, float | None] = {}
    for key in ("daily_usd", "monthly_usd"):
        value = doc.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_SPEND_USD
        ):
            problems.append(Problem(key, f"must be null or a number above 0 and at most {MAX_SPEND_USD:g}"))
            value = None
        out[key] = float(value) if value is not None else None
    if problems:
        raise invalid(problems)
    return out


async def _budget_view(call: Call) -> dict[str, Any]:
    services, s = call.services, call.services.settings
    own_daily, own_monthly = await services.store.tenant_budget(call.tenant)
    totals = await services.store.spend_totals(call.tenant, "", at=time.time())
    return {
        "tenant": call.tenant,
        "own": {"daily_usd": own_daily, "monthly_usd": own_monthly},
        "effective": {
            "daily_usd": tightest(s.tenant_daily_usd, own_daily),
            "monthly_usd": tightest(s.tenant_monthly_usd, own_monthly),
        },
        "spent": {"today_usd": round(totals["day"], 6), "month_usd": round(totals["month"], 6)},
        "creates": creates_view(await services.store.account_state()),
    }


def creates_view(state: AccountState | None) -> Mapping[str, Any]:
    """Whether the balance guard lets creates go out, and why not."""
    if state is None:
        return {"paused": False, "reason": None, "balance_usd": None, "checked_at": None}
    return {
        "paused": state.paused,
        "reason": state.reason,
        "balance_usd": state.balance_usd,
        "checked_at": state.checked_at,
    }
