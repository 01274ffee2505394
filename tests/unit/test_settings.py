from __future__ import annotations

from pathlib import Path

import pytest

from service.settings import ConfigError, load_settings

REPO = Path(__file__).resolve().parents[2]


def test_shipped_config_file_loads_with_defaults() -> None:
    s = load_settings(REPO / "config" / "segflow.toml", {})
    assert s.database_url == "sqlite:///.segflow/segflow.db"
    assert s.output_hosts == ("img.theapi.app", "img.midjourneyapi.xyz")


def test_environment_overrides_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[database]\nurl = "sqlite:///a.db"\n[submitter]\nmax_in_flight = 7\n')
    s = load_settings(cfg, {"SEGFLOW_DATABASE_URL": "sqlite:///b.db", "SEGFLOW_OUTPUT_HOSTS": "a.example, b.example"})
    assert s.database_url == "sqlite:///b.db"
    assert s.max_in_flight == 7
    assert s.output_hosts == ("a.example", "b.example")


def test_secret_in_file_stops_start_up(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[upstream]\napi_key = "oops"\n')
    with pytest.raises(ConfigError, match="SEGFLOW_UPSTREAM_API_KEY"):
        load_settings(cfg, {})


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"SEGFLOW_PORT": "eighty"}, "SEGFLOW_PORT"),
        ({"SEGFLOW_DATABASE_URL": "mysql://x"}, "SEGFLOW_DATABASE_URL"),
        ({"SEGFLOW_PUBLIC_URL": "ftp://x"}, "SEGFLOW_PUBLIC_URL"),
        ({"SEGFLOW_MAX_IN_FLIGHT": "0"}, "SEGFLOW_MAX_IN_FLIGHT"),
        ({"SEGFLOW_WEBHOOK_KEYS": "short"}, "SEGFLOW_WEBHOOK_KEYS"),
        ({"SEGFLOW_API_KEYS": "no-colon-key-aaaaaaaaaaaaaaa"}, "SEGFLOW_API_KEYS"),
        ({"SEGFLOW_UPSTREAM_IS_SANDBOX": "maybe"}, "SEGFLOW_UPSTREAM_IS_SANDBOX"),
    ],
)
def test_invalid_option_names_the_option(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        load_settings(None, env)


def test_unknown_option_in_file_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[submitter]\nmax_inflight = 3\n")
    with pytest.raises(ConfigError, match="max_inflight"):
        load_settings(cfg, {})


def test_secrets_never_show_in_repr_or_errors() -> None:
    s = load_settings(None, {"SEGFLOW_UPSTREAM_API_KEY": "topsecret-upstream", "SEGFLOW_WEBHOOK_KEYS": "k" * 32})
    assert "topsecret-upstream" not in repr(s)
    assert "k" * 32 not in repr(s)
    with pytest.raises(ConfigError) as err:
        load_settings(None, {"SEGFLOW_WEBHOOK_KEYS": "tiny-secret"})
    assert "tiny-secret" not in str(err.value)
