"""Objects written to the operator's S3-compatible service (boto3, the ``s3`` extra): one
PutObject per file, so an object is whole or absent, and every failure told as a
:class:`WriteFailed` with a stable code for the delivery log.

The endpoint, region and credentials come from the settings only, never from a request; a
client names a bucket (checked against ``AUDIENCES_DESTINATION_S3_BUCKETS``) and a prefix. The
endpoint is addressed path-style, so a bucket name never becomes part of a host name.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any

from audiences.config import Settings

CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "ndjson": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
}
REFUSED = {
    "NoSuchBucket": ("s3_bucket_not_found", "the bucket {bucket!r} does not exist"),
    "AccessDenied": ("s3_access_denied", "the S3 service refused to write to {bucket!r}"),
    "InvalidAccessKeyId": ("s3_access_denied", "the S3 service does not know the access key"),
    "SignatureDoesNotMatch": ("s3_access_denied", "the S3 service refused the secret key"),
    "AllAccessDisabled": ("s3_access_denied", "the S3 service refused to write to {bucket!r}"),
}
"""An S3 error code → our code and message; other codes read ``s3_request_failed``."""


class WriteFailed(Exception):
    """A file that could not be written, to a bucket or a folder (``file_targets`` raises it
    too); ``code`` is stable (docs/errors.md), the delivery log shows ``<code>: <message>``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}"[:500])
        self.code = code
        self.message = message


def available() -> bool:
    """Whether boto3 (the ``s3`` extra) is installed."""
    return importlib.util.find_spec("boto3") is not None


def allowed(settings: Settings, bucket: str) -> bool | None:
    """Whether a destination may name ``bucket``: None when S3 destinations are off."""
    if settings.destination_s3_buckets is None:
        return None
    names = {name.strip() for name in settings.destination_s3_buckets.split(",")}
    return "*" in names or bucket in names


def put(settings: Settings, *, bucket: str, key: str, file: Path, fmt: str) -> None:
    """Upload ``file`` as ``key`` in one PutObject: readers see the old object or the whole
    new one, never part of it."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        NoCredentialsError,
        ParamValidationError,
        PartialCredentialsError,
    )

    try:
        client = _client(*_options(settings))
    except (ValueError, PartialCredentialsError) as error:  # an endpoint or key boto3 refuses
        raise WriteFailed(
            "s3_misconfigured", f"the server's S3 settings are refused: {type(error).__name__}"
        ) from None
    try:
        with file.open("rb") as body:
            client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=CONTENT_TYPES[fmt])
    except ClientError as error:
        raise _refused(error.response, bucket) from None
    except NoCredentialsError:
        raise WriteFailed(
            "s3_no_credentials",
            "no S3 credentials: set AUDIENCES_DESTINATION_S3_ACCESS_KEY_ID and its secret",
        ) from None
    except PartialCredentialsError as error:
        message = f"the S3 credentials are incomplete: {type(error).__name__}"
        raise WriteFailed("s3_misconfigured", message) from None
    except ParamValidationError as error:
        message = f"boto3 refused the request: {type(error).__name__}"
        raise WriteFailed("s3_request_failed", message) from None
    except BotoCoreError as error:  # refused or closed connections, timeouts
        # Only the type: botocore's text repeats the endpoint URL, which is the operator's.
        message = f"cannot reach the S3 service: {type(error).__name__}"
        raise WriteFailed("s3_unreachable", message) from None


def _refused(response: dict[str, Any], bucket: str) -> WriteFailed:
    error = response.get("Error", {})
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    name = str(error.get("Code", ""))
    if name in REFUSED:
        code, message = REFUSED[name]
        return WriteFailed(code, message.format(bucket=bucket))
    if status in (401, 403):
        return WriteFailed("s3_access_denied", f"the S3 service answered {status} {name}")
    return WriteFailed("s3_request_failed", f"the S3 service answered {status} {name}".strip())


def _options(settings: Settings) -> tuple[str | None, str, str | None, str | None, float]:
    secret = settings.destination_s3_secret_access_key
    return (
        settings.destination_s3_endpoint_url,
        settings.destination_s3_region,
        settings.destination_s3_access_key_id,
        None if secret is None else secret.get_secret_value(),
        settings.destination_s3_timeout_seconds,
    )


@functools.lru_cache(maxsize=4)
def _client(
    endpoint: str | None, region: str, key_id: str | None, secret: str | None, timeout: float
) -> Any:
    """A boto3 S3 client for these settings (made once: building one reads botocore's service
    models; clients are thread-safe). Few retries of its own: the delivery schedule retries."""
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=timeout,
        read_timeout=timeout,
        retries={"total_max_attempts": 2, "mode": "standard"},
        s3={"addressing_style": "path"},
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=config,
    )
