"""Serving stored objects: masks behind the API key, masks behind a signed link, uploaded inputs.

Every answer streams from the artifact backend (local folder or object store), so any replica can
serve a mask another one stored.
"""

from __future__ import annotations

import time

import structlog
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from service.api.errors import ApiError
from service.artifacts import ArtifactBackend, ArtifactMissing, ArtifactUnavailable
from service.context import Services
from service.jobs import ArtifactRow

log = structlog.get_logger("segflow.api")

# Stored files are served as inert downloads: never sniffed into HTML, never run as a page.
INERT_HEADERS = {"x-content-type-options": "nosniff", "content-security-policy": "sandbox"}


def inert_headers(filename: str) -> dict[str, str]:
    return INERT_HEADERS | {"content-disposition": f'attachment; filename="{filename}"'}


LINK_REFUSED = ApiError(403, "link_invalid", "this link is invalid or has expired")
"""One answer for every bad link (altered, for another mask, expired, unknown key): it says nothing
about which part was wrong."""


def mask_gone() -> ApiError:
    return ApiError(
        410,
        "mask_pruned",
        "this mask was deleted by the retention policy (SEGFLOW_RETENTION_MASKS_DAYS); its sha256 and size "
        "remain in the job",
    )


async def stream_object(
    backend: ArtifactBackend, key: str, *, media_type: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    """The object at `key` as the response body (raises ArtifactMissing)."""
    try:
        opened = await backend.open(key)
    except ArtifactUnavailable as exc:
        log.warning("artifact_storage_unavailable", error=str(exc))
        raise ApiError(
            503,
            "storage_unavailable",
            "the artifact storage cannot answer right now; retry",
            headers={"retry-after": "2"},
        ) from None
    out = {"content-length": str(opened.size), **INERT_HEADERS, **(headers or {})}
    return StreamingResponse(opened.chunks, media_type=media_type or opened.content_type, headers=out)


async def serve_mask(services: Services, artifact: ArtifactRow, *, headers: dict[str, str]) -> Response:
    """A stored mask, or 410 if the pruner deleted it."""
    if artifact.idx in await services.store.pruned_masks(artifact.job_id):
        raise mask_gone()
    try:
        return await stream_object(
            services.artifacts,
            artifact.path,
            media_type="image/png",
            headers={"etag": f'"{artifact.sha256}"', **headers},
        )
    except ArtifactMissing:
        # The store says the mask was written durably: its absence is an operator problem.
        log.error("artifact_missing", job_id=artifact.job_id, path=artifact.path)
        raise ApiError(404, "mask_missing", "the mask was stored but its object is gone") from None


async def signed_mask(request: Request) -> Response:
    """GET /links/masks/{job_id}/{idx}.png?exp=&kid=&sig=: a mask by signed link, no API key."""
    services: Services = request.app.state.services
    job_id = request.path_params["job_id"]
    raw_idx = request.path_params["idx"]
    q = request.query_params
    if not (raw_idx.isascii() and raw_idx.isdigit() and len(raw_idx) <= 4):
        raise LINK_REFUSED
    idx = int(raw_idx)
    if not services.links.verify(job_id, idx, q.get("exp", ""), q.get("kid", ""), q.get("sig", "")):
        raise LINK_REFUSED
    # The link is genuine and current: from here on answers may say what became of the mask.
    artifacts = await services.store.job_artifacts(job_id)
    found = next((a for a in artifacts if a.idx == idx), None)
    if found is None:
        if await services.store.pruned_job(job_id) is not None:
            raise ApiError(410, "job_pruned", "this job and its mask were deleted by the retention policy")
        raise ApiError(404, "not_found", "no such mask")
    remaining = max(0, int(q["exp"]) - int(time.time()))
    cache = f"private, max-age={min(remaining, 3600)}"
    headers = inert_headers(f"{job_id}-{idx}.png") | {"cache-control": cache, "referrer-policy": "no-referrer"}
    return await serve_mask(services, found, headers=headers)
