"""Signed mask links: only this service's own, unaltered, current links verify."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from service.links import LinkSigner, with_download_link

OLD = b"old-master-key-0123456789abcdef"
NEW = b"new-master-key-0123456789abcdef"
NOW = 1_800_000_000.0


def parts(url: str) -> tuple[str, int, dict[str, str]]:
    split = urlsplit(url)
    *_, job_id, name = split.path.split("/")
    return job_id, int(name.removesuffix(".png")), {k: v[0] for k, v in parse_qs(split.query).items()}


def verify(signer: LinkSigner, url: str, now: float = NOW) -> bool:
    job_id, idx, q = parts(url)
    return signer.verify(job_id, idx, q["exp"], q["kid"], q["sig"], now=now)


def test_a_link_is_absolute_on_the_public_url_and_verifies() -> None:
    signer = LinkSigner([NEW], "https://segflow.example/", 3600)
    url = signer.mask_url("job-1", 0, now=NOW)
    assert url.startswith("https://segflow.example/links/masks/job-1/0.png?exp=1800003600&kid=")
    assert verify(signer, url)


def test_a_link_contains_no_secret() -> None:
    signer = LinkSigner([NEW], "https://segflow.example", 3600)
    url = signer.mask_url("job-1", 0, now=NOW)
    assert NEW.decode() not in url
    for derived in signer._keys:
        assert derived.secret.hex() not in url


@pytest.mark.parametrize("field", ["exp", "kid", "sig"])
def test_a_changed_byte_anywhere_is_refused(field: str) -> None:
    signer = LinkSigner([NEW], "https://segflow.example", 3600)
    job_id, idx, q = parts(signer.mask_url("job-1", 0, now=NOW))
    for pos in range(len(q[field])):
        changed = dict(q)
        flipped = "1" if q[field][pos] != "1" else "2"
        changed[field] = q[field][:pos] + flipped + q[field][pos + 1 :]
        assert not signer.verify(job_id, idx, changed["exp"], changed["kid"], changed["sig"], now=NOW)


def test_another_jobs_or_masks_signature_is_refused() -> None:
    signer = LinkSigner([NEW], "https://segflow.example", 3600)
    _, _, q = parts(signer.mask_url("job-1", 0, now=NOW))
    assert not signer.verify("job-2", 0, q["exp"], q["kid"], q["sig"], now=NOW)
    assert not signer.verify("job-1", 1, q["exp"], q["kid"], q["sig"], now=NOW)


def test_an_expired_link_is_refused() -> None:
    signer = LinkSigner([NEW], "https://segflow.example", 60)
    url = signer.mask_url("job-1", 0, now=NOW)
    assert verify(signer, url, now=NOW + 59)
    assert not verify(signer, url, now=NOW + 61)


def test_links_signed_with_an_old_key_verify_while_it_is_configured_and_not_after() -> None:
    before = LinkSigner([OLD], "https://segflow.example", 3600)
    url = before.mask_url("job-1", 0, now=NOW)
    rotating = LinkSigner([NEW, OLD], "https://segflow.example", 3600)
    assert verify(rotating, url)
    assert parts(rotating.mask_url("job-1", 0, now=NOW))[2]["kid"] != parts(url)[2]["kid"]  # the new key signs
    assert not verify(LinkSigner([NEW], "https://segflow.example", 3600), url)


def test_another_deployments_link_is_refused() -> None:
    theirs = LinkSigner([b"their-master-key-0123456789abcd"], "https://segflow.example", 3600)
    assert not verify(LinkSigner([NEW], "https://segflow.example", 3600), theirs.mask_url("job-1", 0, now=NOW))


@pytest.mark.parametrize("exp", ["", "-1", "1e9", "\uff11\uff18", "9" * 40])
def test_malformed_expiries_are_refused(exp: str) -> None:
    signer = LinkSigner([NEW], "https://segflow.example", 3600)
    _, _, q = parts(signer.mask_url("job-1", 0, now=NOW))
    assert not signer.verify("job-1", 0, exp, q["kid"], q["sig"], now=NOW)


def test_succeeded_callbacks_get_a_fresh_link_and_others_are_unchanged() -> None:
    signer = LinkSigner([NEW], "https://segflow.example", 3600)
    body = '{"id":"evt_1","type":"job.succeeded","data":{"job_id":"job-1","artifact":{"sha256":"ab","url":"/x"}}}'
    out = with_download_link(body, signer)
    assert '"download_url":"https://segflow.example/links/masks/job-1/0.png?' in out
    failed = '{"id":"evt_2","type":"job.failed","data":{"job_id":"job-2","artifact":null}}'
    assert with_download_link(failed, signer) == failed
