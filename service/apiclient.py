"""A small client of segflow's own REST API, used by the CLI (submit, status, results, demo)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import orjson


class ApiError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"segflow answered {status}: {body[:300]}")
        self.status = status


class SegflowClient:
    def __init__(self, base_url: str, api_key: str, *, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"authorization": f"Bearer {api_key}"}
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s))

    async def __aenter__(self) -> SegflowClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._session.close()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
    ) -> Any:
        body = orjson.dumps(json) if json is not None else data
        h = {**self._headers, **(headers or {})}
        if json is not None:
            h["content-type"] = "application/json"
        async with self._session.request(method, self.base_url + path, data=body, headers=h) as resp:
            raw = await resp.read()
            if resp.status >= 400:
                raise ApiError(resp.status, raw.decode(errors="replace"))
            return orjson.loads(raw) if raw else None

    async def submit(
        self,
        items: Sequence[Mapping[str, Any]],
        *,
        callback_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        payload: dict[str, Any] = {"items": list(items)}
        if callback_url:
            payload["callback_url"] = callback_url
        headers = {"idempotency-key": idempotency_key} if idempotency_key else None
        return await self._call("POST", "/v1/batches", json=payload, headers=headers)

    async def batch(self, batch_id: str) -> Any:
        return await self._call("GET", f"/v1/batches/{batch_id}")

    async def batch_jobs(self, batch_id: str) -> list[Any]:
        jobs: list[Any] = []
        cursor: str | None = None
        while True:
            query = f"?limit=500&cursor={cursor}" if cursor else "?limit=500"
            page = await self._call("GET", f"/v1/batches/{batch_id}/jobs{query}")
            jobs.extend(page["jobs"])
            cursor = page.get("next_cursor")
            if not cursor:
                return jobs

    async def job(self, job_id: str) -> Any:
        return await self._call("GET", f"/v1/jobs/{job_id}")

    async def save_mask(self, job_id: str, target: Path) -> int:
        async with self._session.get(f"{self.base_url}/v1/jobs/{job_id}/mask", headers=self._headers) as resp:
            if resp.status != 200:
                raise ApiError(resp.status, (await resp.read()).decode(errors="replace"))
            data = await resp.read()
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return len(data)

    async def manifest(self, batch_id: str) -> list[dict[str, Any]]:
        """The batch's manifest (JSON Lines): one row per job, with signed download links."""
        async with self._session.get(f"{self.base_url}/v1/batches/{batch_id}/manifest", headers=self._headers) as resp:
            raw = await resp.read()
            if resp.status != 200:
                raise ApiError(resp.status, raw.decode(errors="replace"))
        return [orjson.loads(line) for line in raw.splitlines() if line.strip()]

    async def save_link(self, url: str, target: Path, sha256: str | None) -> int:
        """Download a signed link (no API key is sent) to `target`, checked against `sha256`;
        written under a temporary name first, so `target` is whole or absent."""
        async with self._session.get(url) as resp:
            data = await resp.read()
            if resp.status != 200:
                raise ApiError(resp.status, data.decode(errors="replace"))
        if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
            raise ApiError(502, f"downloaded mask does not match its sha256 ({target.name})")
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        part.write_bytes(data)
        part.replace(target)
        return len(data)

    async def event_deliveries(self, event_id: str) -> Any:
        return await self._call("GET", f"/v1/events/{event_id}/deliveries")

    async def replay_event(self, event_id: str) -> Any:
        return await self._call("POST", f"/v1/events/{event_id}/replay")

    async def replay_subscription(self, sub_id: str, since: str) -> Any:
        return await self._call("POST", f"/v1/subscriptions/{sub_id}/replay", json={"since": since})

    async def upload_input(self, data: bytes, content_type: str) -> str:
        """Host a local image with segflow so the upstream can fetch it; returns its URL."""
        answer = await self._call("POST", "/v1/inputs", data=data, headers={"content-type": content_type})
        return str(answer["url"])
