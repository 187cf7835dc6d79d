"""A real S3-compatible server for tests: moto's server (its HTTP S3 API, a thread on
127.0.0.1), read back through boto3 as any S3 client would; and a switch that makes it check
credentials, as a real service does, for the tests of refused ones."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import duckdb
import httpx
from botocore.config import Config
from moto.server import ThreadedMotoServer

KEY_ID = "audiences-test"
SECRET = "audiences-test-secret"
REGION = "us-east-1"


@dataclass
class S3Server:
    """A running server: its endpoint and a boto3 client of it."""

    endpoint: str
    client: Any

    def make_bucket(self, name: str) -> str:
        """A new, empty bucket."""
        self.client.create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """The keys of the bucket's objects under ``prefix``, sorted."""
        listed = self.client.list_objects_v2(Bucket=bucket, Prefix=prefix)
        return sorted(entry["Key"] for entry in listed.get("Contents", []))

    def read(self, bucket: str, key: str) -> bytes:
        """An object's bytes."""
        body: bytes = self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        return body

    def rows(self, bucket: str, key: str) -> list[dict[str, Any]]:
        """An object's rows as dicts of text, read by its format (CSV, NDJSON, Parquet)."""
        data = self.read(bucket, key)
        if key.endswith(".ndjson"):
            return [json.loads(line) for line in data.decode().splitlines()]
        with tempfile.TemporaryDirectory() as folder, duckdb.connect() as con:
            spilled = Path(folder) / Path(key).name
            spilled.write_bytes(data)
            if key.endswith(".parquet"):
                table = con.read_parquet(str(spilled))
            else:
                table = con.read_csv(str(spilled), all_varchar=True)
            names = table.columns
            return [dict(zip(names, values, strict=True)) for values in table.fetchall()]

    @contextmanager
    def checking_credentials(self) -> Iterator[None]:
        """Every request in the block is authenticated (moto's IAM check): an unknown access
        key is refused with ``InvalidAccessKeyId`` as by a real service."""
        httpx.post(f"{self.endpoint}/moto-api/reset-auth", content=b"0").raise_for_status()
        try:
            yield
        finally:
            httpx.post(f"{self.endpoint}/moto-api/reset-auth", content=b"inf").raise_for_status()


@contextmanager
def serving() -> Iterator[S3Server]:
    """A moto S3 server on a free port of 127.0.0.1 for the block."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
        config=Config(s3={"addressing_style": "path"}),
    )
    try:
        yield S3Server(endpoint, client)
    finally:
        server.stop()
