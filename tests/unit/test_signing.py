"""Callback signatures checked by independent implementations: the `standardwebhooks` package for
`v1,` (HMAC) and libsodium (PyNaCl) for `v1a,` (Ed25519)."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import pytest
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from service.signing import CallbackSigner

OLD, NEW = b"o" * 32, b"n" * 32
BODY = b'{"type":"job.succeeded","data":{"job_id":"j1"}}'


def signed(signer: CallbackSigner, *, asymmetric: bool = False, owner: str = "sub_1") -> dict[str, str]:
    return signer.headers(owner, "msg_1", int(time.time()), BODY, asymmetric=asymmetric)


def test_standardwebhooks_verifies_the_hmac_signature() -> None:
    signer = CallbackSigner([NEW])
    Webhook(signer.secrets("sub_1")[0]).verify(BODY, signed(signer))


def test_another_owners_secret_does_not_verify() -> None:
    signer = CallbackSigner([NEW])
    with pytest.raises(WebhookVerificationError):
        Webhook(signer.secrets("sub_2")[0]).verify(BODY, signed(signer))


def test_a_changed_body_does_not_verify() -> None:
    signer = CallbackSigner([NEW])
    with pytest.raises(WebhookVerificationError):
        Webhook(signer.secrets("sub_1")[0]).verify(BODY + b" ", signed(signer))


def test_during_rotation_both_the_old_and_the_new_secret_verify() -> None:
    before = CallbackSigner([OLD])
    during = CallbackSigner([NEW, OLD])
    headers = signed(during)
    assert len(headers["webhook-signature"].split()) == 2
    Webhook(before.secrets("sub_1")[0]).verify(BODY, headers)  # receivers not yet rotated
    Webhook(during.secrets("sub_1")[0]).verify(BODY, headers)  # receivers already rotated


def test_ed25519_signature_verifies_with_the_served_public_key() -> None:
    signer = CallbackSigner([NEW])
    headers = signed(signer, asymmetric=True)
    content = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + BODY
    v1a = [s for s in headers["webhook-signature"].split() if s.startswith("v1a,")]
    assert len(v1a) == 1
    public = base64.b64decode(signer.public_keys("sub_1")[0].removeprefix("whpk_"))
    VerifyKey(public).verify(content, base64.b64decode(v1a[0].removeprefix("v1a,")))
    with pytest.raises(BadSignatureError):
        VerifyKey(public).verify(content + b"x", base64.b64decode(v1a[0].removeprefix("v1a,")))


def test_secrets_are_derived_not_random() -> None:
    assert CallbackSigner([NEW]).secrets("sub_1") == CallbackSigner([NEW]).secrets("sub_1")
    assert CallbackSigner([NEW]).public_keys("sub_1") == CallbackSigner([NEW]).public_keys("sub_1")


def test_the_timestamp_is_what_standardwebhooks_checks() -> None:
    signer = CallbackSigner([NEW])
    stale = signer.headers("sub_1", "msg_1", int(time.time()) - 3600, BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(signer.secrets("sub_1")[0]).verify(BODY, stale)
    assert Webhook(signer.secrets("sub_1")[0]).sign("msg_1", datetime.now(tz=UTC), BODY.decode())
