"""File destination targets: what a ``path`` may name, and files written whole to a folder or
to a real S3-compatible server (moto's, on 127.0.0.1), with each failure's stable code."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from audiences.config import Settings
from audiences.errors import ValidationFailed
from audiences.services import file_targets
from audiences.services.file_targets import Bucket, Folder
from tests.s3_server import KEY_ID, REGION, SECRET, S3Server, serving

ROWS = [{"id": "u1", "country": "FR"}, {"id": "u,2", "country": None}, {"id": "0042"}]


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    """One S3-compatible server for the module."""
    with serving() as server:
        yield server


def s3_settings(settings: Settings, endpoint: str, tmp_path: Path, **update: object) -> Settings:
    """Settings whose S3 destinations write to ``endpoint`` with the test credentials."""
    values: dict[str, object] = {
        "data_dir": tmp_path,
        "destination_s3_buckets": "*",
        "destination_s3_endpoint_url": endpoint,
        "destination_s3_region": REGION,
        "destination_s3_access_key_id": KEY_ID,
        "destination_s3_secret_access_key": SecretStr(SECRET),
        "destination_s3_timeout_seconds": 5.0,
        **update,
    }
    return settings.model_copy(update=values)


def refused(settings: Settings, path: str) -> str:
    """The code ``path`` is refused with."""
    with pytest.raises(ValidationFailed) as caught:
        file_targets.resolve(settings, path)
    assert caught.value.errors[0].location == ("body", "path")
    return caught.value.code


def test_a_path_names_a_folder_under_the_root_or_an_allowed_bucket(
    settings: Settings, tmp_path: Path
) -> None:
    """``s3://bucket/prefix`` names a bucket the operator lists; anything else a folder under
    the root; each refusal has its code."""
    off = settings.model_copy(update={"destination_s3_buckets": None})
    assert refused(off, "s3://exports/crm") == "s3_destinations_disabled"
    listed = settings.model_copy(
        update={"destination_s3_buckets": "exports, other", "destination_file_root": tmp_path}
    )
    assert file_targets.resolve(listed, "s3://exports/crm//daily/") == Bucket(
        "exports", "crm/daily/"
    )
    assert file_targets.resolve(listed, "s3://exports") == Bucket("exports", "")
    assert file_targets.resolve(listed, "crm/daily") == Folder(tmp_path.resolve() / "crm/daily")
    assert refused(listed, "s3://elsewhere/crm") == "bucket_not_allowed"
    for bad in ("s3://Exports/x", "s3://a/x", "s3://ex..ports/x", "s3:///x"):
        assert refused(listed, bad) == "path_not_allowed", bad
    for bad in ("s3://exports/../x", "s3://exports/a/./b", "s3://exports/a\nb", "http://x/y"):
        assert refused(listed, bad) == "path_not_allowed", bad
    anything = settings.model_copy(update={"destination_s3_buckets": "*"})
    assert file_targets.resolve(anything, "s3://any-bucket.1/p") == Bucket("any-bucket.1", "p/")


@pytest.mark.parametrize("fmt", ["csv", "ndjson", "parquet"])
def test_each_format_lands_as_one_whole_object(
    s3: S3Server, settings: Settings, tmp_path: Path, fmt: str
) -> None:
    """A file is one object under the prefix, its rows read back by any S3 client; nothing is
    left in the staging folder."""
    bucket = s3.make_bucket(f"formats-{fmt}")
    tuned = s3_settings(settings, s3.endpoint, tmp_path)
    key = file_targets.write(
        tuned,
        f"s3://{bucket}/crm/daily",
        name="vips-1",
        fmt=fmt,
        rows=ROWS,
        columns=["id", "country"],
    )
    assert key == f"crm/daily/vips-1.{fmt}"
    assert s3.keys(bucket) == [key]
    rows = s3.rows(bucket, key)
    assert [row["id"] for row in rows] == ["u1", "u,2", "0042"]
    assert rows[0]["country"] == "FR"
    assert not any((tmp_path / "exports").iterdir())


def test_a_missing_bucket_refused_credentials_or_no_service_fail_with_their_code(
    s3: S3Server, settings: Settings, tmp_path: Path
) -> None:
    """Each failure is a :class:`WriteFailed` with a stable code, and leaves no object."""
    tuned = s3_settings(settings, s3.endpoint, tmp_path)

    def failure(target: Settings, path: str) -> str:
        with pytest.raises(file_targets.WriteFailed) as caught:
            file_targets.write(target, path, name="x", fmt="csv", rows=ROWS, columns=["id"])
        return caught.value.code

    assert failure(tuned, "s3://no-such-bucket/p") == "s3_bucket_not_found"
    bucket = s3.make_bucket("guarded")
    with s3.checking_credentials():
        assert failure(tuned, f"s3://{bucket}/p") == "s3_access_denied"
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    nowhere = s3_settings(settings, f"http://127.0.0.1:{port}", tmp_path)
    assert failure(nowhere, f"s3://{bucket}/p") == "s3_unreachable"
    assert s3.keys(bucket) == []
    off = tuned.model_copy(update={"destination_s3_buckets": "other"})
    assert failure(off, f"s3://{bucket}/p") == "bucket_not_allowed"
    assert not any((tmp_path / "exports").iterdir())


def test_settings_boto3_refuses_or_user_info_in_the_endpoint_never_reach_the_log(
    s3: S3Server, settings: Settings, tmp_path: Path
) -> None:
    """An endpoint boto3 will not build a client for (settings made before the check) fails
    as ``s3_misconfigured``; an unreachable endpoint's error names no part of its URL (user
    info there would be a password)."""
    bucket = s3.make_bucket("misconfigured")

    def failure(target: Settings) -> file_targets.WriteFailed:
        with pytest.raises(file_targets.WriteFailed) as caught:
            file_targets.write(
                target, f"s3://{bucket}/p", name="x", fmt="csv", rows=ROWS, columns=["id"]
            )
        return caught.value

    underscored = failure(s3_settings(settings, "http://minio_1:9000", tmp_path))
    assert underscored.code == "s3_misconfigured"
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    leaky = failure(s3_settings(settings, f"http://user:hunter2@127.0.0.1:{port}", tmp_path))
    assert leaky.code == "s3_unreachable"
    assert "hunter2" not in str(leaky)
    assert "127.0.0.1" not in str(leaky)
    assert s3.keys(bucket) == []


@pytest.mark.parametrize("path", ["s3://unexpected/p", "local"])
def test_an_unexpected_error_while_reading_rows_is_a_failed_write(
    s3: S3Server, settings: Settings, tmp_path: Path, path: str
) -> None:
    """An error no target names (the engine failing while members are read) is a
    :class:`WriteFailed` like any other, so the delivery schedule applies; nothing is left."""
    s3.make_bucket("unexpected")
    root = tmp_path / "root"
    root.mkdir()
    tuned = s3_settings(settings, s3.endpoint, tmp_path / "data", destination_file_root=root)

    def rows() -> Iterator[dict[str, object]]:
        yield ROWS[0]
        raise RuntimeError("the engine went away")

    with pytest.raises(file_targets.WriteFailed) as caught:
        file_targets.write(tuned, path, name="x", fmt="csv", rows=rows(), columns=["id"])
    assert caught.value.code == "file_write_failed"
    assert "RuntimeError" in caught.value.message
    assert s3.keys("unexpected") == []
    assert not any(root.rglob("*.*"))
    assert not any((tmp_path / "data" / "exports").rglob("*"))


def test_staged_copies_a_crash_left_are_swept_at_the_next_write(
    s3: S3Server, settings: Settings, tmp_path: Path
) -> None:
    """A ``.tmp-*`` copy untouched for a day (a process died between staging and upload) is
    removed by the next write to a bucket; a younger one (another write's) is left."""
    bucket = s3.make_bucket("swept")
    staging = tmp_path / "exports"
    staging.mkdir(mode=0o700)
    old, young = staging / ".tmp-old.csv", staging / ".tmp-young.csv"
    old.write_text("id\nu1\n")
    young.write_text("id\nu2\n")
    day_ago = time.time() - file_targets.STALE_SECONDS - 60
    os.utime(old, (day_ago, day_ago))
    tuned = s3_settings(settings, s3.endpoint, tmp_path)
    file_targets.write(tuned, f"s3://{bucket}/p", name="x", fmt="csv", rows=ROWS, columns=["id"])
    assert sorted(p.name for p in staging.iterdir()) == [".tmp-young.csv"]
    assert s3.keys(bucket) == ["p/x.csv"]
