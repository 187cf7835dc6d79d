"""``POST /v1/audiences/{id}/imports``: a file of ids uploaded into a static audience, streamed
from disk in chunks (constant memory whatever its size), answered with the job that imports it.

A retried upload reopens the file and sends it again under the same ``Idempotency-Key``: the
server queues one import. A file that cannot be read fails before anything is sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

from audiences.schemas.jobs import Job
from audiences.sdk._call import Call, clean, endpoint, model, new_key
from audiences.sdk._resource import AsyncResource, SyncResource, sends, sends_async
from audiences.sdk.resources._targets import Target, target_id

CHUNK = 1 << 20
CONTENT_TYPES = {
    ".csv": "text/csv",
    ".tsv": "text/tab-separated-values",
    ".ndjson": "application/x-ndjson",
    ".jsonl": "application/x-ndjson",
    ".txt": "text/plain",
    ".gz": "application/gzip",
}
"""The content type of a file by its suffix; anything else is sent as CSV."""
Uploaded = Callable[[int], None]
"""Called with the bytes sent so far, after each chunk."""


def chunks(path: Path, on_upload: Uploaded | None) -> Iterator[bytes]:
    """The file in 1 MiB chunks, read as the upload goes (shared by every file upload)."""
    sent = 0
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            sent += len(chunk)
            yield chunk
            if on_upload is not None:
                on_upload(sent)


async def achunks(path: Path, on_upload: Uploaded | None) -> AsyncIterator[bytes]:
    """The same chunks for an async upload."""
    for chunk in chunks(path, on_upload):
        yield chunk


class Calls:
    """The requests of the import resource."""

    @staticmethod
    def create(
        audience: Target,
        file: str | Path,
        *,
        mode: str = "add",
        format: str | None = None,
        id_column: str | None = None,
        attributes: str | None = None,
        on_upload: Uploaded | None = None,
    ) -> Call[Job]:
        """Upload ``file`` into a static audience (``mode``: add, remove or replace): the
        ``import.rows`` job (``client.jobs.wait(job)`` follows it). ``format`` overrides the
        type read from the suffix (``.gz`` files need it unless they hold CSV)."""
        path = Path(file)
        with path.open("rb"):  # unreadable or missing: OSError now, before any request
            pass
        suffix = path.suffix.lower()
        params = clean(
            {"mode": mode, "format": format, "id_column": id_column, "attributes": attributes}
        )
        headers = {
            "Content-Type": CONTENT_TYPES.get(suffix, "text/csv"),
            "Content-Length": str(path.stat().st_size),
            "Idempotency-Key": new_key(),
        }
        return Call(
            "POST",
            endpoint("/v1/audiences/{}/imports", target_id(audience)),
            model(Job),
            params=params,
            headers=headers,
            body=lambda: chunks(path, on_upload),
            abody=lambda: achunks(path, on_upload),
        )


class Imports(SyncResource):
    """File imports: ``client.imports``."""

    create = sends(Calls.create)


class AsyncImports(AsyncResource):
    """File imports: ``client.imports`` of an :class:`AsyncClient`."""

    create = sends_async(Calls.create)
