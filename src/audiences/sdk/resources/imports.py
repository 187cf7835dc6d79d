"""``POST /v1/audiences/{id}/imports``: a file of ids uploaded into a static audience, streamed
from disk in chunks (constant memory whatever its size), answered with the job that imports it.

A retried upload reopens the file and sends it again under the same ``Idempotency-Key``: the
server queues one import. The key is derived from the file's content and the request (its path
and options), so the same upload made again later, by a new process (``audiences import`` run
again after an interrupted upload), carries the same key too: the server answers the import it
already has, if one arrived whole, and queues one otherwise. An upload is never resumed midway:
it is sent again from its start. A file that cannot be read fails before anything is sent.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path

from audiences.schemas.jobs import Job
from audiences.sdk._call import Call, clean, endpoint, model
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


def file_key(path: Path, request: str, params: Mapping[str, str]) -> str:
    """The ``Idempotency-Key`` of uploading ``path`` by ``request`` (its method and path) with
    ``params``: the SHA-256 of all three, the file read once through in chunks first."""
    digest = hashlib.sha256()
    for part in (request, *(f"{name}={params[name]}" for name in sorted(params))):
        digest.update(part.encode() + b"\0")
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return f"sdk-file-{digest.hexdigest()}"


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
        idempotency_key: str | None = None,
    ) -> Call[Job]:
        """Upload ``file`` into a static audience (``mode``: add, remove or replace): the
        ``import.rows`` job (``client.jobs.wait(job)`` follows it). ``format`` overrides the
        type read from the suffix (``.gz`` files need it unless they hold CSV).

        The ``Idempotency-Key`` is derived from the file's content, the audience and the options
        (:func:`file_key`), so uploading the same file the same way again answers the import
        the server already has instead of importing it twice; pass ``idempotency_key`` (a new
        one) to import it again anyway."""
        path = Path(file)
        with path.open("rb"):  # unreadable or missing: OSError now, before any request
            pass
        suffix = path.suffix.lower()
        params = clean(
            {"mode": mode, "format": format, "id_column": id_column, "attributes": attributes}
        )
        url = endpoint("/v1/audiences/{}/imports", target_id(audience))
        headers = {
            "Content-Type": CONTENT_TYPES.get(suffix, "text/csv"),
            "Content-Length": str(path.stat().st_size),
            "Idempotency-Key": idempotency_key or file_key(path, f"POST {url}", params),
        }
        return Call(
            "POST",
            url,
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
