"""Settings: every knob of the service, read from the environment with the ``AUDIENCES_`` prefix.

Built once at the entry point (``audiences serve`` or ``create_app``) and passed down; no layer
imports a global settings object.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

EVENT_DEDUPE_WINDOW_HOURS = 168
"""The default of ``event_dedupe_window_hours`` (7 days), the one place it is written."""

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
S3_ENDPOINT = rf"^https?://(?:(?:{_LABEL}\.)*{_LABEL}|\[[0-9A-Fa-f:.]+\])(?::[0-9]{{1,5}})?/?$"
"""An S3 endpoint boto3 takes: a DNS name of letters, digits and hyphens (no ``_``), an IPv4 or
a bracketed IPv6 address, a port; no user info, path, query or fragment."""


class Settings(BaseSettings):
    """Service configuration. ``docs/configuration.md`` lists every field; a test keeps it so."""

    model_config = SettingsConfigDict(env_prefix="AUDIENCES_", extra="ignore")

    data_dir: Path = Field(
        default=Path("data"),
        description="Folder for the embedded metadata database and profile data files.",
    )
    database_url: str | None = Field(
        default=None,
        description=(
            "SQLAlchemy URL of the metadata database. Default: SQLite at "
            "`<data_dir>/audiences.db`. Production: `postgresql+psycopg://user@host/db`."
        ),
    )
    host: str = Field(default="127.0.0.1", description="Address `audiences serve` binds to.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port `audiences serve` binds to.")
    page_size_default: int = Field(
        default=50, ge=1, description="Items in a list page when `limit` is not given."
    )
    page_size_max: int = Field(
        default=200,
        ge=1,
        le=200,
        description="Largest `limit` a list accepts (at most 200); above it answers 422.",
    )
    max_body_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        description="Largest request body for JSON endpoints, in bytes; above it answers 413.",
    )
    max_batch_body_bytes: int = Field(
        default=32 * 1_048_576,
        ge=1024,
        description=(
            "Largest body of a batch call (`POST /v1/profiles/batch`, `POST /v1/events`, "
            "membership writes by id), "
            "in bytes: room for 10,000 records; above it answers 413."
        ),
    )
    body_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description=(
            "Longest wait for the next part of a request body, in seconds; past it the request "
            "answers 408 and its connection closes (an upload that keeps arriving, however "
            "slowly, is not cut)."
        ),
    )
    max_patch_operations: int = Field(
        default=100,
        ge=1,
        description=(
            "Most operations one JSON Patch holds; above it answers 422. Its result, like a "
            "merge patch's, is also held to `max_body_bytes` (413)."
        ),
    )
    max_ids_per_call: int = Field(
        default=100, ge=1, description="Most ids a bulk-get call accepts; above it answers 422."
    )
    rate_limit: str = Field(
        default="600/minute",
        description=(
            "Requests allowed per API key, in the `limits` library's notation "
            "(`600/minute`, `10/second`). Above it answers 429 with `Retry-After`. Requests "
            "without a valid key count against the same limit per client address."
        ),
    )
    rate_limit_storage: str = Field(
        default="memory://",
        description="Where rate-limit counters live: `memory://` or `redis://host:port`.",
    )
    read_cache_seconds: float = Field(
        default=2.0,
        ge=0,
        description=(
            "How long a process keeps API keys, audiences and membership revisions it has read, "
            "for is-member and a profile's audiences. A process sees its own writes at once; "
            "another process's writes (a revoked key included) after at most this long. "
            "0 turns the cache off."
        ),
    )
    egress_allow_private: bool = Field(
        default=False,
        description=(
            "When true, webhook endpoints and synced-list URLs may point at loopback, private "
            "and link-local addresses (tests, on-premise receivers). Off, such URLs answer 400 "
            "`url_not_allowed` (the SSRF guard, `services.egress`)."
        ),
    )
    require_if_match: bool = Field(
        default=False,
        description="When true, PUT, PATCH and DELETE without `If-Match` answer 428.",
    )
    idempotency_ttl_hours: int = Field(
        default=24, ge=1, description="How long an `Idempotency-Key` and its response are kept."
    )
    bitmap_cache_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=0,
        description="Memory for deserialized membership bitmaps kept between requests, in bytes.",
    )
    max_profiles_per_call: int = Field(
        default=10_000,
        ge=1,
        le=10_000,
        description="Most profiles one batch upsert accepts; above it answers 422.",
    )
    max_events_per_call: int = Field(
        default=10_000,
        ge=1,
        le=10_000,
        description="Most events one `POST /v1/events` accepts; above it answers 413.",
    )
    max_event_future_seconds: int = Field(
        default=86_400,
        ge=0,
        description=(
            "How far past the time it is received an event's `timestamp` may lie, in seconds "
            "(clocks of devices drift); an event further in the future is refused "
            "(`timestamp_in_future`)."
        ),
    )
    event_dedupe_window_hours: int = Field(
        default=EVENT_DEDUPE_WINDOW_HOURS,
        ge=1,
        le=87_600,
        description=(
            "How long a client `event_id` is remembered, in hours (1 to 87,600; default 7 days, "
            "as Amplitude's `insert_id`): a copy of an event whose first copy was received "
            "within this window answers as a duplicate. DuckDB and ClickHouse look ids up only "
            "among the events received in it (DuckDB's zone maps on `received_at` skip the "
            "older row groups, so its check does not grow with the table; ClickHouse's bloom "
            "filter on `event_id` serves its lookup); PostgreSQL's unique index recognizes a "
            "copy for as long as the first is stored."
        ),
    )
    scheduler_seconds: int = Field(
        default=15,
        ge=0,
        description=(
            "How often each server or worker process looks for due scheduled refreshes, in "
            "seconds; 0 disables its scheduler."
        ),
    )
    streaming_sweep_seconds: int = Field(
        default=10,
        ge=1,
        le=3600,
        description=(
            "How often, in seconds, the scheduler sweeps each workspace with streaming "
            "behavioural audiences: profiles whose events a window boundary crossed since the "
            "last sweep are evaluated again, so they leave (or enter) within this interval."
        ),
    )
    min_refresh_interval_seconds: int = Field(
        default=60,
        ge=60,
        description="The shortest `interval_seconds` a scheduled refresh policy may ask for.",
    )
    max_upload_bytes: int = Field(
        default=4 * 1024**3,
        ge=1024,
        description=(
            "Largest import file upload, in bytes (gzipped size when gzipped); above it answers "
            "413, counted while the upload streams to disk."
        ),
    )
    max_member_ids_per_call: int = Field(
        default=10_000,
        ge=1,
        le=10_000,
        description="Most ids one membership write (`POST …/members`) accepts; above it 422.",
    )
    max_queued_writes_per_audience: int = Field(
        default=1_000,
        ge=1,
        description=(
            "Most membership writes and imports of one static audience waiting to be applied "
            "(queued or running); past it a new one answers 429 `write_backlog_full` with "
            "`Retry-After`."
        ),
    )
    max_queued_writes_per_workspace: int = Field(
        default=10_000,
        ge=1,
        description=(
            "Most membership writes and imports of one workspace waiting to be applied; past it "
            "a new one answers 429 `write_backlog_full` with `Retry-After`."
        ),
    )
    sync_root: Path | None = Field(
        default=None,
        description=(
            "Folder under which an external audience's file source may name a `path` (after "
            "resolving links), each workspace in its own subfolder named by its id "
            "(`<root>/<workspace id>/…`); unset, path sources answer 422 "
            "`sync_path_not_allowed`."
        ),
    )
    sync_max_bytes: int = Field(
        default=1024**3,
        ge=1024,
        description=(
            "Largest file an external audience's sync fetches from a URL or reads from a path, "
            "in bytes; a bigger one fails the sync (`sync_too_large`), counted while it streams."
        ),
    )
    sync_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        description=(
            "How long a sync's fetch of a URL may take in all (connecting, waiting, reading), "
            "and a SQL source's query may run; past it the sync fails (`sync_timeout`, "
            "`engine_query_timeout`) and the members stay as they were."
        ),
    )
    import_chunk_rows: int = Field(
        default=50_000,
        ge=100,
        description="Rows an import handles between two checkpoints (its resume points).",
    )
    import_range_rows: int = Field(
        default=1_000_000,
        ge=100,
        description=(
            "Rows an import of ids only resolves between two checkpoints when DuckDB reads the "
            "file itself (each range is one set-based insert and one join)."
        ),
    )
    profile_engine: Literal["duckdb", "postgres", "clickhouse"] = Field(
        default="duckdb",
        description=(
            "Where profile data lives and rules run: `duckdb`, a file in the data folder "
            "owned by the server process; `postgres`, tables in a PostgreSQL schema that every "
            "server and `audiences worker` process shares (jobs then run in any of them); "
            "`clickhouse`, ClickHouse in process or on a server (see docs/engines.md)."
        ),
    )
    profile_engine_url: str | None = Field(
        default=None,
        description=(
            "URL of the profile engine's server. For `postgres`: "
            "`postgresql://user@host/db`; default: the metadata database "
            "(`AUDIENCES_DATABASE_URL`) when that is PostgreSQL, else the server refuses to start. "
            "For `clickhouse`: `http(s)://user:pass@host:8123/db` for a server, or "
            "`chdb:<folder>` for ClickHouse in process; default: `<data_dir>/clickhouse`."
        ),
    )
    profile_engine_schema: str = Field(
        default="audiences_profiles",
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description=(
            "The PostgreSQL schema that holds the `postgres` engine's tables (created when "
            "missing), so it can share the metadata database."
        ),
    )
    profile_memory_limit: str = Field(
        default="256MB",
        description=(
            "DuckDB's `memory_limit` for the embedded profile engine (its buffer pool; larger "
            "work spills to disk), e.g. `256MB`, `2GB`."
        ),
    )
    log_level: str = Field(default="info", description="Log level of the server.")
    worker_threads: int = Field(
        default=2,
        ge=0,
        le=64,
        description=(
            "Job worker threads `audiences serve` runs inside the server (0: none; run "
            "`audiences worker` processes instead). Also the default of `audiences worker`."
        ),
    )
    job_lease_seconds: float = Field(
        default=30.0,
        ge=0.5,
        description=(
            "How long a worker holds a job without a heartbeat; after it, the job is retried "
            "by another worker. Heartbeats come every third of it."
        ),
    )
    job_poll_seconds: float = Field(
        default=1.0,
        gt=0,
        description=(
            "How long an idle worker waits before looking again; a job queued by its own "
            "process wakes it at once."
        ),
    )
    job_max_attempts: int = Field(
        default=3,
        ge=1,
        description="Attempts a job gets before it fails, unless its enqueuer says otherwise.",
    )
    job_backoff_seconds: float = Field(
        default=10.0,
        ge=0,
        description="Wait before the first retry of a failed job; doubles each time, at most 1h.",
    )
    job_handler_modules: str = Field(
        default="",
        description=(
            "Comma-separated Python modules workers import at start; each registers job "
            "handlers with `audiences.jobs.handlers.HANDLERS`."
        ),
    )

    webhook_timeout_seconds: float = Field(
        default=15.0,
        gt=0,
        le=60,
        description=(
            "How long a webhook request may take (connect, send, answer), in seconds; past it "
            "the attempt fails and is retried on the schedule."
        ),
    )
    webhook_response_bytes: int = Field(
        default=4096,
        ge=0,
        le=65_536,
        description=(
            "How much of a receiver's answer is read and kept in the delivery log, in bytes; "
            "the rest is never read."
        ),
    )
    webhook_retry_schedule: str = Field(
        default="0,5,300,1800,7200,18000,36000,36000",
        pattern=r"^\d+(\.\d+)?(,\d+(\.\d+)?)*$",
        description=(
            "Delays before each attempt of a message, in seconds, comma-separated (the "
            "Standard Webhooks schedule: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, "
            "10 h). A `Retry-After` answer waits longer when it asks to. When the last attempt "
            "fails too, the destination is disabled (`disabled_reason` says why): with the "
            "default schedule, after 27 h 35 min 5 s of failures."
        ),
    )
    webhook_batch_size: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        description="Most member changes one delivered message carries (webhook or file).",
    )
    webhook_batch_wait_seconds: float = Field(
        default=1.0,
        ge=0,
        le=3600,
        description=(
            "How long a change may wait for others to share its message, in seconds: a "
            "webhook's changes are sent once the oldest is this old, or at once when "
            "`webhook_batch_size` are waiting."
        ),
    )
    webhook_secret_overlap_hours: float = Field(
        default=24.0,
        ge=0,
        le=24 * 30,
        description=(
            "How long a webhook secret replaced by `rotate-secret` keeps signing requests (both "
            "signatures are sent), in hours, so receivers can switch without losing any."
        ),
    )
    delivery_log_retention_days: int = Field(
        default=30,
        ge=0,
        le=36_500,
        description=(
            "How long the delivery log keeps a message that is done with (delivered, or a "
            "test message that failed) and its attempts, in days; the scheduler's hourly "
            "housekeeping deletes older ones. A message not delivered yet is never deleted. "
            "0 keeps the log forever."
        ),
    )
    destination_file_root: Path | None = Field(
        default=None,
        description=(
            "The folder under which file destinations write (their `path` is relative to it). "
            "Unset: file destinations are refused (`file_destinations_disabled`)."
        ),
    )
    destination_s3_buckets: str | None = Field(
        default=None,
        description=(
            "Buckets a file destination's `path` may name as `s3://<bucket>/<prefix>`, "
            "comma-separated; `*` for any bucket the credentials reach (every workspace may "
            "name any of them). Unset: `s3://` paths are refused (`s3_destinations_disabled`). "
            "Needs the `s3` extra (boto3)."
        ),
    )
    destination_s3_endpoint_url: str | None = Field(
        default=None,
        pattern=S3_ENDPOINT,
        description=(
            "URL of the S3-compatible service file destinations write to (MinIO, Ceph, "
            "Garage …), addressed path-style: `http(s)://host[:port]`, the host a DNS name "
            "(letters, digits, hyphens: no `_`), an IPv4 or a bracketed IPv6 address, no "
            "user info. Unset: AWS S3 in `destination_s3_region`. Set by the operator and "
            "trusted: the SSRF guard does not apply to it."
        ),
    )
    destination_s3_region: str = Field(
        default="us-east-1",
        pattern=r"^[a-z0-9-]{1,32}$",
        description="The region S3 requests are signed for.",
    )
    destination_s3_access_key_id: str | None = Field(
        default=None,
        description=(
            "Access key of S3 file destinations. Unset (with the secret): boto3's own chain "
            "(`AWS_*` variables, a shared profile, an instance role)."
        ),
    )
    destination_s3_secret_access_key: SecretStr | None = Field(
        default=None, description="The secret of `destination_s3_access_key_id`."
    )
    destination_s3_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description=(
            "How long connecting to the S3 service, and each read of its answer, may take, in "
            "seconds; past it the write fails and is retried on the schedule."
        ),
    )

    @model_validator(mode="after")
    def _s3_key_pair(self) -> Settings:
        if (self.destination_s3_access_key_id is None) != (
            self.destination_s3_secret_access_key is None
        ):
            raise ValueError(
                "set both destination_s3_access_key_id and destination_s3_secret_access_key, "
                "or neither (boto3's own chain)"
            )
        return self

    @model_validator(mode="after")
    def _default_database(self) -> Settings:
        if self.database_url is None:
            self.database_url = f"sqlite:///{self.data_dir / 'audiences.db'}"
        return self

    @property
    def retry_delays(self) -> list[float]:
        """``webhook_retry_schedule`` as seconds, one per attempt."""
        return [float(part) for part in self.webhook_retry_schedule.split(",")]

    @property
    def metadata_url(self) -> str:
        """The metadata database URL, resolved (never ``None`` after validation)."""
        assert self.database_url is not None
        return self.database_url
