"""The hand-written OpenAPI document describes exactly the routes the app serves."""

from __future__ import annotations

import re
from typing import Any

from starlette.routing import Route

from service.api import api_routes
from service.api.openapi import document

ERROR_STATUSES = {"400", "401", "404", "409", "413", "422", "503"}


def served() -> set[tuple[str, str]]:
    pairs = set()
    for route in api_routes():
        assert isinstance(route, Route)
        for method in route.methods or ():
            if method != "HEAD":  # Starlette adds HEAD to every GET
                pairs.add((route.path, method.lower()))
    return pairs


def documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method) for path, ops in doc["paths"].items() for method in ops}


def test_every_route_is_documented_and_every_documented_route_is_served() -> None:
    assert documented(document()) == served()


def test_every_error_answer_is_documented_somewhere() -> None:
    statuses = {s for ops in document()["paths"].values() for op in ops.values() for s in op["responses"]}
    assert statuses >= ERROR_STATUSES


def test_every_reference_resolves() -> None:
    doc = document()
    raw = str(doc)
    for ref in set(re.findall(r"#/components/(\w+)/(\w+)", raw)):
        section, name = ref
        assert name in doc["components"][section], ref


def test_v1_routes_need_the_bearer_key_and_probes_do_not() -> None:
    doc = document()
    assert doc["security"] == [{"bearerAuth": []}]
    for path, ops in doc["paths"].items():
        for op in ops.values():
            assert (op.get("security") == []) == (not path.startswith("/v1/")), path
