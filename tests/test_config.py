"""Settings checked when they are read: an S3 endpoint boto3 takes, a key pair or none."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from audiences.config import Settings


@pytest.mark.parametrize(
    "endpoint",
    ["http://minio:9000", "https://s3.example.com/", "http://127.0.0.1:9000", "http://[::1]:9000"],
)
def test_an_s3_endpoint_boto3_takes_is_accepted(endpoint: str) -> None:
    """A DNS name, an IPv4 or bracketed IPv6 address, a port."""
    assert Settings(destination_s3_endpoint_url=endpoint).destination_s3_endpoint_url == endpoint


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://minio_1:9000",  # boto3 refuses `_` in a host name
        "http://user:secret@minio:9000",  # user info would be shown in errors
        "http://-minio:9000",
        "ftp://minio:9000",
        "http://minio:9000/bucket",
        "http://minio:9000?x=1",
    ],
)
def test_an_s3_endpoint_boto3_refuses_or_with_user_info_is_refused_at_start(
    endpoint: str,
) -> None:
    """Refused when the settings are read, not at the first write."""
    with pytest.raises(ValidationError, match="destination_s3_endpoint_url"):
        Settings(destination_s3_endpoint_url=endpoint)


def test_an_s3_access_key_needs_its_secret() -> None:
    """Both or neither: half a key pair is a setting mistake, not an unreachable service."""
    with pytest.raises(ValidationError, match="both"):
        Settings(destination_s3_access_key_id="key")
    with pytest.raises(ValidationError, match="both"):
        Settings(destination_s3_secret_access_key=SecretStr("secret"))
    paired = Settings(
        destination_s3_access_key_id="key", destination_s3_secret_access_key=SecretStr("s")
    )
    assert paired.destination_s3_access_key_id == "key"


def test_the_event_dedupe_window_is_read_from_the_environment_and_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Hours, default 7 days; less than an hour (or more than ten years) refused at start."""
    assert Settings().event_dedupe_window_hours == 168
    monkeypatch.setenv("AUDIENCES_EVENT_DEDUPE_WINDOW_HOURS", "24")
    assert Settings().event_dedupe_window_hours == 24
    for wrong in ("0", "-1", "87601", "7d"):
        monkeypatch.setenv("AUDIENCES_EVENT_DEDUPE_WINDOW_HOURS", wrong)
        with pytest.raises(ValidationError, match="event_dedupe_window_hours"):
            Settings()
