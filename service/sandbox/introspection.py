"""Loopback-only views into the sandbox for tests and benchmarks (no key: it is a local tool)."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.sandbox.api import engine_of
from service.sandbox.masks import SYNTHETIC_NOTE
from service.sandbox.responses import JSONBody


async def index(request: Request) -> Response:
    base = engine_of(request).settings.base_url
    return JSONBody(
        {
            "service": "segflow sandbox: a local stand-in for the Qubico unified task API (segment)",
            "note": SYNTHETIC_NOTE,
            "endpoints": {
                "tasks": f"{base}/api/v1/task",
                "task_history": f"{base}/api/open/tasks/histories",
                "account": f"{base}/account/info",
                "samples": f"{base}/samples",
                "stats": f"{base}/_sandbox/stats",
                "task_list": f"{base}/_sandbox/tasks",
                "faults": f"{base}/_sandbox/faults",
            },
        }
    )


async def stats(request: Request) -> Response:
    return JSONBody(engine_of(request).stats_json())


async def tasks(request: Request) -> Response:
    return JSONBody(engine_of(request).tasks_json())


async def faults(request: Request) -> Response:
    engine = engine_of(request)
    if request.method == "PATCH":
        try:
            updates = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return JSONBody({"error": "body must be a JSON object"}, 400)
        if not isinstance(updates, dict):
            return JSONBody({"error": "body must be a JSON object"}, 400)
        try:
            engine.set_faults(**updates)
        except ValueError as exc:
            return JSONBody({"error": str(exc)}, 400)
    return JSONBody(engine.faults.as_dict())


def introspection_routes() -> list[Route]:
    return [
        Route("/", index, methods=["GET"]),
        Route("/_sandbox/stats", stats, methods=["GET"]),
        Route("/_sandbox/tasks", tasks, methods=["GET"]),
        Route("/_sandbox/faults", faults, methods=["GET", "PATCH"]),
    ]
