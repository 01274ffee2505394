"""Sandbox settings: validation names the bad field; overrides reach the faults; CLI flags map to fields."""

from __future__ import annotations

import argparse

import pytest

from service.sandbox import cli
from service.sandbox.settings import COUNT_FIELDS, FAULT_KINDS, FaultSettings, SandboxSettings


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"port": 70000}, "port"),
        ({"latency_min_s": 3.0, "latency_max_s": 1.0}, "latency_max_s"),
        ({"webhook_retries": -1}, "webhook_retries"),
        ({"retention_s": 0}, "retention_s"),
        ({"credit_usd": -1.0}, "credit_usd"),
        ({"api_keys": ("",)}, "api_keys"),
        ({"public_url": "ftp://x"}, "public_url"),
        ({"webhook_drop": 1.5}, "webhook_drop"),
        ({"burst_429_length": 0}, "burst_429_length"),
        ({"create_hold_s": -2.0}, "create_hold_s"),
        ({"no_such_setting": 1}, "no_such_setting"),
    ],
)
def test_bad_value_raises_value_error_naming_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        SandboxSettings().with_overrides(**overrides)


def test_fault_names_given_as_overrides_go_into_faults() -> None:
    settings = SandboxSettings().with_overrides(seed=3, webhook_drop=0.25, create_lost=1.0)
    assert settings.seed == 3
    assert settings.faults.webhook_drop == 0.25 and settings.faults.create_lost == 1.0


def test_base_url_defaults_to_the_listening_address() -> None:
    assert SandboxSettings(port=9000).base_url == "http://127.0.0.1:9000"
    assert SandboxSettings(public_url="https://sb.example/").base_url == "https://sb.example"


def test_every_fault_kind_is_a_probability_field() -> None:
    faults = FaultSettings()
    assert all(getattr(faults, kind) == 0.0 for kind in FAULT_KINDS)
    assert set(FAULT_KINDS) == {k for k in faults.as_dict() if not k.endswith("_s") and k not in COUNT_FIELDS}


def test_cli_flags_build_settings() -> None:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(
        [
            "--port",
            "0",
            "--seed",
            "9",
            "--latency-max",
            "0.1",
            "--latency-min",
            "0",
            "--any-key",
            "--webhook-drop",
            "0.2",
            "--create-lost",
            "0.1",
            "--burst-429-length",
            "2",
            "--no-processing-webhook",
            "--credit",
            "1.5",
        ]
    )
    settings = cli.settings_from_args(args)
    assert (settings.port, settings.seed, settings.latency_max_s, settings.api_keys) == (0, 9, 0.1, ())
    assert settings.faults.webhook_drop == 0.2 and settings.faults.create_lost == 0.1
    assert settings.faults.burst_429_length == 2 and not settings.processing_webhook
    assert settings.credit_usd == 1.5


def test_cli_without_flags_keeps_the_defaults() -> None:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    assert cli.settings_from_args(parser.parse_args([])) == SandboxSettings()
