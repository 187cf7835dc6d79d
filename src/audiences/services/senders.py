"""Sending one message: a signed POST to a webhook (Standard Webhooks headers), or files
written into a file destination's folder. Each returns an :class:`Outcome` and never raises
for the receiver's faults: those are the delivery log's business."""

from __future__ import annotations

import csv
import email.utils
import json
import os
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import duckdb
import httpx
import urllib3

from audiences.config import Settings
from audiences.errors import AudiencesError
from audiences.kit import webhooks
from audiences.services import egress

USER_AGENT = "audiences-webhooks/1"


@dataclass(frozen=True)
class Outcome:
    """How one attempt went: ``ok`` on a 2xx (or files written); ``gone`` on a 410;
    ``retry_after`` in seconds when the receiver asked for a pause."""

    ok: bool
    status: int | None
    response_ms: int
    error: str | None = None
    response: str | None = None
    retry_after: float | None = None
    gone: bool = False


def client(settings: Settings) -> egress.PinnedClient:
    """An HTTP client for webhook requests: the timeout, no redirects followed, no proxy
    from the environment, certificates verified for the name, and each request sent to an
    address the SSRF guard checked for it (``egress.PinnedClient``: a name re-pointed at a
    private address after its check is never reached)."""
    return egress.PinnedClient(
        allow_private=settings.egress_allow_private, timeout=settings.webhook_timeout_seconds
    )


def post(
    *,
    url: str,
    secrets: list[str],
    msg_id: str,
    body: str,
    settings: Settings,
    given: egress.PinnedClient | None = None,
) -> Outcome:
    """POST ``body`` to ``url`` signed with every secret; the guard checks the address each
    connection is made to (a name may point elsewhere since it was saved)."""
    started = time.perf_counter()
    payload = body.encode()
    headers = {
        **webhooks.headers(secrets, msg_id, int(time.time()), payload),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }
    http = given or client(settings)
    try:
        answer = http.request("POST", url, body=payload, headers=headers)
        try:
            text = _read_capped(answer, settings.webhook_response_bytes)
        finally:
            http.done(answer)
        elapsed = _ms(started)
        status = answer.status
        ok = 200 <= status < 300
        return Outcome(
            ok,
            status,
            elapsed,
            error=None if ok else f"the receiver answered {status}",
            response=text,
            retry_after=_retry_after(answer.headers.get("retry-after")),
            gone=status == 410,
        )
    except AudiencesError as exc:  # the guard refused the address (url_not_allowed)
        return Outcome(False, None, _ms(started), error=exc.detail)
    except urllib3.exceptions.HTTPError as exc:
        error = "timed out" if egress.timed_out(exc) else f"{type(exc).__name__}: {exc}"[:500]
        return Outcome(False, None, _ms(started), error=error)
    except (httpx.InvalidURL, UnicodeError) as exc:  # a URL saved before names were checked
        return Outcome(
            False,
            None,
            _ms(started),
            error=f"{_host_of(url)} cannot be sent to: {exc}"[:500],
        )
    finally:
        if given is None:
            http.close()


def _host_of(url: str) -> str:
    """The URL's host for an error message (never its userinfo, which may hold a secret)."""
    try:
        return urlsplit(url).hostname or "the URL's host"
    except ValueError:  # brackets that name no IP address
        return "the URL's host"


def _read_capped(answer: urllib3.BaseHTTPResponse, cap: int) -> str | None:
    """At most ``cap`` bytes of the answer, as sent (not decompressed); the rest is never
    read (the connection closes). Read until the cap or the answer's end: an answer cut
    short of its length raises (``ProtocolError``), as urllib3 tells only on a read that
    finds nothing more, so the attempt fails."""
    kept = bytearray()
    while len(kept) < cap:
        chunk = answer.read(cap - len(kept), decode_content=False)
        if not chunk:
            break
        kept += chunk
    return kept.decode("utf-8", "replace") or None


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: a number of seconds, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # not "¹", which isdigit() takes
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


def _ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


COLUMNS = ("id", "change", "revision", "cause")


def write_file(
    folder: Path,
    *,
    name: str,
    fmt: str,
    rows: Iterable[dict[str, Any]],
    columns: list[str],
) -> Path:
    """Write ``rows`` as ``name.<fmt>`` into ``folder``, atomically: a temporary file in the
    same folder, renamed into place once complete, so a reader never sees half a file (and a
    rerun of the same message replaces it with the same content)."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{name}.{fmt}"
    staged = stage_file(folder, fmt=fmt, rows=rows, columns=columns)
    try:
        os.replace(staged, final)
    finally:
        staged.unlink(missing_ok=True)
    return final


def stage_file(
    folder: Path, *, fmt: str, rows: Iterable[dict[str, Any]], columns: list[str]
) -> Path:
    """``rows`` written whole as a ``.tmp-*`` file of ``fmt`` in ``folder`` (removed again
    if writing fails): what is renamed into place, or uploaded as one object."""
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=f".{fmt}")
    os.close(handle)
    staged = Path(temporary)
    try:
        if fmt == "ndjson":
            with staged.open("w", encoding="utf-8") as out:
                for row in rows:
                    out.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        else:
            text = staged.with_suffix(".csv") if fmt == "parquet" else staged
            with text.open("w", encoding="utf-8", newline="") as out:
                writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
                writer.writeheader()
                for row in rows:
                    writer.writerow({key: _cell(value) for key, value in row.items()})
            if fmt == "parquet":
                _csv_to_parquet(text, staged, columns)
                text.unlink()
    except BaseException:
        staged.unlink(missing_ok=True)
        if fmt == "parquet":
            staged.with_suffix(".csv").unlink(missing_ok=True)
        raise
    return staged


def _cell(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=str)
    return value


def _csv_to_parquet(source: Path, target: Path, columns: list[str]) -> None:
    """Parquet through DuckDB (every column text, so ids keep their exact form)."""
    types = ", ".join(f"{_quoted(c)}: 'VARCHAR'" for c in columns)
    with duckdb.connect() as con:
        con.execute(
            f"COPY (SELECT * FROM read_csv({_quoted(str(source))}, header = true, "
            f"columns = {{{types}}})) TO {_quoted(str(target))} (FORMAT parquet)"
        )


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def file_stamp(moment: datetime) -> str:
    """A file name's time: ``20261206T091500Z``."""
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
