"""Signed mask links over HTTP: a valid link downloads the mask with no API key, from the local
folder or from S3; an altered, foreign or expired link gets one 403 that says nothing more."""

from __future__ import annotations

import hashlib
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import pytest
from multidict import CIMultiDict

from service.links import LinkSigner
from tests.fixtures.api import Api, png, succeeded
from tests.fixtures.segflow import WEBHOOK_KEY


@pytest.fixture
def api(api_on_each_backend: Api) -> Api:
    return api_on_each_backend


async def stored_job(api: Api, mask: bytes) -> tuple[str, str]:
    job_id = (await api.submit(n=1))["jobs"][0]["job_id"]
    await succeeded(api.services, job_id, mask)
    job = (await api.call("GET", f"/v1/jobs/{job_id}")).body
    return job_id, job["artifact"]["download_url"]


async def fetch(url: str) -> tuple[int, bytes, CIMultiDict[str]]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:  # no authorization header
        return resp.status, await resp.read(), CIMultiDict(resp.headers)


def with_query(url: str, **changes: str) -> str:
    split = urlsplit(url)
    q = {k: v[0] for k, v in parse_qs(split.query).items()} | changes
    return split._replace(query=urlencode(q)).geturl()


async def test_a_valid_link_downloads_the_mask_without_an_api_key(api: Api) -> None:
    mask = png(7, 5)
    _, url = await stored_job(api, mask)
    assert url.startswith(api.app.url + "/links/masks/")
    status, body, headers = await fetch(url)
    assert (status, body, headers["Content-Type"]) == (200, mask, "image/png")
    assert headers["ETag"] == f'"{hashlib.sha256(mask).hexdigest()}"'
    assert headers["Referrer-Policy"] == "no-referrer"


async def test_tampered_foreign_and_expired_links_get_the_same_403(api: Api) -> None:
    job_id, url = await stored_job(api, png(3, 3))
    other_id, other_url = await stored_job(api, png(4, 4))
    sig = parse_qs(urlsplit(url).query)["sig"][0]
    flipped = ("A" if sig[5] != "A" else "B").join((sig[:5], sig[6:]))
    expired = LinkSigner([WEBHOOK_KEY.encode()], api.app.url, 60).mask_url(job_id, 0, now=1_000_000.0)
    bad = [
        with_query(url, sig=flipped),  # a changed byte of the signature
        with_query(url, exp=str(int(parse_qs(urlsplit(url).query)["exp"][0]) + 1)),  # a later expiry
        url.replace(f"/{job_id}/", f"/{other_id}/"),  # another job's mask with this job's signature
        with_query(other_url, sig=sig),  # this job's signature on another job's link
        url.replace("/0.png", "/1.png"),
        with_query(url, kid="000000000000"),
        expired,
        url.split("?")[0],
    ]
    answers = [await fetch(u) for u in bad]
    assert {(status, body) for status, body, _ in answers} == {
        (403, b'{"error":"link_invalid","message":"this link is invalid or has expired","detail":[]}')
    }


async def test_a_link_to_a_pruned_mask_answers_410(api: Api) -> None:
    job_id, url = await stored_job(api, png(2, 2))
    artifacts = await api.services.store.job_artifacts(job_id)
    masks = await api.services.store.expired_masks(cutoff=artifacts[0].created_at + 1, limit=10)
    await api.services.artifacts.delete([m.path for m in masks])
    await api.services.store.mark_masks_pruned(masks, now=artifacts[0].created_at + 1)
    status, body, _ = await fetch(url)
    assert status == 410 and b"mask_pruned" in body
    keyed = await api.call("GET", f"/v1/jobs/{job_id}/mask")
    assert (keyed.status, keyed.error) == (410, "mask_pruned")
    job = (await api.call("GET", f"/v1/jobs/{job_id}")).body
    assert job["artifact"]["download_url"] is None and job["artifact"]["pruned_at"] is not None
    assert job["artifact"]["sha256"] == artifacts[0].sha256
