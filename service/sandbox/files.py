"""Files the sandbox hosts: output masks under /temp (until they expire) and the demo samples."""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from service.sandbox.api import engine_of
from service.sandbox.masks import SYNTHETIC_NOTE
from service.sandbox.responses import JSONBody, plain

_OUTPUT_NAME = re.compile(r"^[0-9a-f-]{36}\.png$")


async def output_file(request: Request) -> Response:
    name = request.path_params["name"]
    engine = engine_of(request)
    redirect_host = engine.settings.output_redirect_host
    if redirect_host is not None and (request.url.hostname or "").lower() == redirect_host.lower():
        # Asked under the second host name: send the client on to where the file is served.
        return RedirectResponse(f"{engine.settings.base_url}/temp/{name}", status_code=302)
    data = engine.output(name) if _OUTPUT_NAME.match(name) else None
    if data is None:
        return plain(404, "not found")
    return Response(data, media_type="image/png", headers={"x-sandbox-note": SYNTHETIC_NOTE})


async def list_samples(request: Request) -> Response:
    engine = engine_of(request)
    base = engine.settings.base_url
    return JSONBody(
        {
            "samples": [
                {
                    "name": s.name,
                    "url": f"{base}/samples/{s.name}",
                    "content_type": s.content_type,
                    "width": s.width,
                    "height": s.height,
                }
                for s in engine.samples.values()
            ]
        }
    )


async def sample_file(request: Request) -> Response:
    sample = engine_of(request).samples.get(request.path_params["name"])
    if sample is None:
        return plain(404, "not found")
    return Response(sample.data, media_type=sample.content_type)


def file_routes() -> list[Route]:
    return [
        Route("/temp/{name}", output_file, methods=["GET"]),
        Route("/samples", list_samples, methods=["GET"]),
        Route("/samples/{name}", sample_file, methods=["GET"]),
    ]
