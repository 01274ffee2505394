"""The hand-written client (service/client) agrees with the OpenAPI document: one method per
operation on both clients, the same method and path, answers typed with the document's fields;
and `verify_callback` accepts what segflow's signer signs and nothing else."""

from __future__ import annotations

import re
import time
import typing
from typing import Any

import pytest

from service.api.openapi import document
from service.client import OPERATIONS, AsyncClient, Client, InvalidSignature, verify_callback
from service.client import types as t
from service.signing import CallbackSigner, subscription_owners


def snake(operation_id: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", operation_id).lower()


def operations() -> dict[str, tuple[str, str]]:
    doc = document()
    return {op["operationId"]: (m.upper(), path) for path, ops in doc["paths"].items() for m, op in ops.items()}


def test_the_client_knows_every_operation_with_its_method_and_path() -> None:
    assert operations() == OPERATIONS


def test_every_operation_is_a_method_of_both_clients() -> None:
    for client in (Client("http://127.0.0.1:9"), AsyncClient("http://127.0.0.1:9")):
        missing = [op for op in OPERATIONS if not callable(getattr(client, snake(op), None))]
        assert not missing, (type(client).__name__, missing)


# answer type -> the document's schema of that operation's 2xx answer
TYPED = {
    t.BatchCreated: ("createBatch", "202"),
    t.BatchSummary: ("getBatch", "200"),
    t.BatchPage: ("listBatches", "200"),
    t.JobPage: ("listBatchJobs", "200"),
    t.Job: ("getJob", "200"),
    t.Subscription: ("getSubscription", "200"),
    t.EventPage: ("listEvents", "200"),
    t.Input: ("uploadInput", "201"),
}


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        schema = doc["components"]["schemas"][name]
    return schema


@pytest.mark.parametrize("typed", list(TYPED), ids=lambda c: c.__name__)
def test_answer_types_have_exactly_the_documents_fields(typed: Any) -> None:
    doc = document()
    operation, status = TYPED[typed]
    method, path = OPERATIONS[operation]
    answer = doc["paths"][path][method.lower()]["responses"][status]["content"]["application/json"]["schema"]
    schema = _resolve(doc, answer)
    assert set(typing.get_type_hints(typed)) == set(schema["properties"]), typed.__name__
    assert set(schema.get("required", [])) <= set(typed.__required_keys__)


SIGNER = CallbackSigner([b"master-key-one-0123456789", b"master-key-two-0123456789"])
BODY = b'{"id":"evt_1","type":"job.succeeded","timestamp":"2026-01-01T00:00:00Z","data":{}}'


def signed(owner: str | list[str] = "sub_1", *, asymmetric: bool = False, at: int | None = None) -> dict[str, str]:
    return SIGNER.headers(owner, "evt_1", at or int(time.time()), BODY, asymmetric=asymmetric)


def test_verify_callback_accepts_each_current_secret_and_public_key() -> None:
    headers = signed(asymmetric=True)
    for key in [*SIGNER.secrets("sub_1"), *SIGNER.public_keys("sub_1")]:
        assert verify_callback(headers, BODY, key)["id"] == "evt_1"
    # Header names in any case, the body as text, a list of keys of which one matches.
    upper = {k.upper(): v for k, v in headers.items()}
    assert verify_callback(upper, BODY.decode(), ["whsec_" + "A" * 44, SIGNER.secrets("sub_1")[1]])["type"]


def test_verify_callback_follows_a_subscription_rotation() -> None:
    owners = subscription_owners("sub_1", 1, time.time() + 60, time.time())
    headers = signed(owners)
    for secret in SIGNER.secrets(owners):  # the new and the previous generation both verify
        verify_callback(headers, BODY, secret)
    assert SIGNER.secrets(owners)[-1] in SIGNER.secrets("sub_1")


@pytest.mark.parametrize(
    "tamper",
    ["body", "wrong secret", "other owner", "stale", "future", "no signature header", "v1a without key", "garbage"],
)
def test_verify_callback_refuses_anything_else(tamper: str) -> None:
    headers, body, key = signed(), BODY, SIGNER.secrets("sub_1")[0]
    if tamper == "body":
        body = BODY.replace(b"succeeded", b"failed")
    elif tamper == "wrong secret":
        key = "whsec_" + "QUFB" * 11
    elif tamper == "other owner":
        key = SIGNER.secrets("sub_2")[0]
    elif tamper == "stale":
        headers = signed(at=int(time.time()) - 3600)
    elif tamper == "future":
        headers = signed(at=int(time.time()) + 3600)
    elif tamper == "no signature header":
        headers.pop("webhook-signature")
    elif tamper == "v1a without key":
        key = SIGNER.public_keys("sub_1")[0]  # only v1 signatures were sent
    elif tamper == "garbage":
        headers["webhook-signature"] = "v1,@@@ v1"
    with pytest.raises(InvalidSignature):
        verify_callback(headers, body, key)
