"""The provider's task endpoints: POST /api/v1/task, GET and DELETE /api/v1/task/{task_id}."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.sandbox.engine import SandboxEngine
from service.sandbox.responses import HeldResponse, JSONBody, LostResponse, failure, success
from service.sandbox.wire import SandboxError


def engine_of(request: Request) -> SandboxEngine:
    engine: SandboxEngine = request.app.state.sandbox
    return engine


async def create_task(request: Request) -> Response:
    engine = engine_of(request)
    try:
        body: object = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        body = None  # answered as "body must be a JSON object", after the key is checked
    try:
        created = await engine.create(request.headers.get("x-api-key"), body)
    except SandboxError as exc:
        return failure(exc)
    envelope = {"code": 200, "data": created.task, "message": "success"}
    if created.fate == "lost":
        return LostResponse(envelope)
    if created.fate == "held":
        return HeldResponse(envelope, hold_s=engine.faults.create_hold_s, released=engine.holds_released)
    return success(created.task)


async def get_task(request: Request) -> Response:
    try:
        task = engine_of(request).get(request.headers.get("x-api-key"), request.path_params["task_id"])
    except SandboxError as exc:
        return failure(exc)
    return success(task)


async def cancel_task(request: Request) -> Response:
    try:
        answer = engine_of(request).cancel(request.headers.get("x-api-key"), request.path_params["task_id"])
    except SandboxError as exc:
        return failure(exc)
    return JSONBody(answer)


async def task_history(request: Request) -> Response:
    try:
        answer = engine_of(request).history(request.headers.get("x-api-key"), request.query_params)
    except SandboxError as exc:
        return failure(exc)
    return JSONBody(answer)


async def account_info(request: Request) -> Response:
    try:
        answer = engine_of(request).account(request.headers.get("x-api-key"))
    except SandboxError as exc:
        return failure(exc)
    return JSONBody(answer)


def api_routes() -> list[Route]:
    return [
        Route("/api/v1/task", create_task, methods=["POST"]),
        Route("/api/v1/task/{task_id}", get_task, methods=["GET"]),
        Route("/api/v1/task/{task_id}", cancel_task, methods=["DELETE"]),
        Route("/api/open/tasks/histories", task_history, methods=["GET"]),
        Route("/account/info", account_info, methods=["GET"]),
    ]
