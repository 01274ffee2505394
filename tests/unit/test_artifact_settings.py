"""Artifact and retention settings: checked at start-up, S3 credentials never from the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.artifacts import open_backend
from service.artifacts_local import LocalArtifactStore
from service.settings import ConfigError, load_settings

REPO = Path(__file__).resolve().parents[2]


def test_defaults_keep_masks_30_inputs_7_jobs_90_outbox_30_days_in_a_local_folder() -> None:
    s = load_settings(REPO / "config" / "segflow.toml", {})
    assert (s.retention_masks_days, s.retention_inputs_days, s.retention_jobs_days, s.retention_outbox_days) == (
        30,
        7,
        90,
        30,
    )
    assert s.artifact_url == "" and s.artifact_link_ttl_s == 86_400
    backend = open_backend(s.artifact_url, s.artifact_dir, s.s3_endpoint_url)
    assert isinstance(backend, LocalArtifactStore) and backend.root == Path(s.artifact_dir).resolve()


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"SEGFLOW_ARTIFACT_URL": "ftp://bucket/x"}, "SEGFLOW_ARTIFACT_URL"),
        ({"SEGFLOW_ARTIFACT_URL": "s3:///no-bucket"}, "SEGFLOW_ARTIFACT_URL"),
        ({"SEGFLOW_S3_ENDPOINT_URL": "http://key:secret@minio:9000"}, "SEGFLOW_S3_ENDPOINT_URL"),
        ({"SEGFLOW_S3_ENDPOINT_URL": "minio:9000"}, "SEGFLOW_S3_ENDPOINT_URL"),
        ({"SEGFLOW_ARTIFACT_LINK_TTL_S": "10"}, "SEGFLOW_ARTIFACT_LINK_TTL_S"),
        ({"SEGFLOW_ARTIFACT_LINK_TTL_S": str(31 * 86_400)}, "SEGFLOW_ARTIFACT_LINK_TTL_S"),
        ({"SEGFLOW_RETENTION_JOBS_DAYS": "-1"}, "SEGFLOW_RETENTION_JOBS_DAYS"),
        ({"SEGFLOW_PRUNE_BATCH": "0"}, "SEGFLOW_PRUNE_BATCH"),
    ],
)
def test_invalid_artifact_options_name_the_option(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        load_settings(None, env)


@pytest.mark.parametrize("key", ["aws_access_key_id", "aws_secret_access_key", "access_key", "region"])
def test_s3_credentials_and_region_are_not_options_of_the_file(tmp_path: Path, key: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[artifacts]\nurl = "s3://bucket/prefix"\n{key} = "AKIA-something"\n')
    with pytest.raises(ConfigError, match=key):
        load_settings(cfg, {})


def test_an_s3_url_opens_the_s3_backend_with_path_style_for_a_custom_endpoint() -> None:
    s = load_settings(
        None, {"SEGFLOW_ARTIFACT_URL": "s3://masks/prod/eu", "SEGFLOW_S3_ENDPOINT_URL": "http://127.0.0.1:9"}
    )
    backend = open_backend(s.artifact_url, s.artifact_dir, s.s3_endpoint_url)
    assert backend.description == "s3://masks/prod/eu at http://127.0.0.1:9"
