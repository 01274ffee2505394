"""Serving the console's static files: read once from the package, answered with cache validators
and the security headers a page holding an API key needs."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from service.api.endpoint import guarded
from service.api.errors import ApiError

PAGE = "index.html"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}

# Only segflow's own script, style and API. Source images live wherever the clients' URLs point, so
# images may come from any http(s) host (and masks from blob: URLs the script makes).
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob: http: https:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    # Revalidated on every load (a 304 costs nothing), so an upgraded segflow serves its new script.
    "cache-control": "no-cache",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


def load_assets() -> dict[str, Asset]:
    """Every file of the console's static folder, by name."""
    assets: dict[str, Asset] = {}
    for entry in resources.files(__package__).joinpath("static").iterdir():
        suffix = entry.name[entry.name.rfind(".") :]
        if entry.is_file() and suffix in _TYPES:
            body = entry.read_bytes()
            assets[entry.name] = Asset(body, _TYPES[suffix], f'"{hashlib.sha256(body).hexdigest()[:32]}"')
    return assets


def console_routes() -> list[BaseRoute]:
    """`/console` (the page) and `/console/{name}` (its script and style)."""
    assets = load_assets()
    if PAGE not in assets:
        raise RuntimeError(f"the console's {PAGE} is missing from the package")

    async def page(request: Request) -> Response:
        return _answer(request, assets[PAGE])

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        found = assets.get(name) if name != PAGE else None
        if found is None:
            raise ApiError(404, "not_found", "no such console file")
        return _answer(request, found)

    return [
        Route("/console", guarded(page), methods=["GET"], name="console"),
        Route("/console/{name}", guarded(asset), methods=["GET"], name="console_asset"),
    ]


def _answer(request: Request, asset: Asset) -> Response:
    headers = {**SECURITY_HEADERS, "etag": asset.etag}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)
