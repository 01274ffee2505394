from __future__ import annotations

import pytest

from service.webhook_secrets import MAX_ATTEMPTS_VERIFIED, WebhookSecrets

OLD, NEW = b"o" * 32, b"n" * 32


def test_secret_is_per_job_and_attempt() -> None:
    s = WebhookSecrets([NEW])
    assert s.derive("job-a", 1) != s.derive("job-a", 2)
    assert s.derive("job-a", 1) != s.derive("job-b", 1)
    assert s.derive("job-a", 1) == WebhookSecrets([NEW]).derive("job-a", 1)


def test_secret_is_url_safe_text() -> None:
    secret = WebhookSecrets([NEW]).derive("job", 1)
    assert len(secret) == 43
    assert all(c.isalnum() or c in "-_" for c in secret)


def test_attempt_of_finds_the_attempt() -> None:
    s = WebhookSecrets([NEW])
    assert s.attempt_of("job", s.derive("job", 3)) == 3


def test_another_jobs_secret_is_refused() -> None:
    s = WebhookSecrets([NEW])
    assert s.attempt_of("job-a", s.derive("job-b", 1)) is None


def test_wrong_and_empty_secrets_are_refused() -> None:
    s = WebhookSecrets([NEW])
    assert s.attempt_of("job", "x" * 43) is None
    assert s.attempt_of("job", "") is None


def test_rotation_old_key_still_verifies_new_key_signs() -> None:
    before = WebhookSecrets([OLD])
    during = WebhookSecrets([NEW, OLD])
    issued_before = before.derive("job", 1)
    assert during.attempt_of("job", issued_before) == 1
    assert during.derive("job", 1) == WebhookSecrets([NEW]).derive("job", 1)
    assert WebhookSecrets([NEW]).attempt_of("job", issued_before) is None


def test_attempts_beyond_the_verified_range_are_refused() -> None:
    s = WebhookSecrets([NEW])
    assert s.attempt_of("job", s.derive("job", MAX_ATTEMPTS_VERIFIED + 1)) is None


def test_short_or_missing_keys_are_refused() -> None:
    with pytest.raises(ValueError):
        WebhookSecrets([])
    with pytest.raises(ValueError):
        WebhookSecrets([b"short"])
