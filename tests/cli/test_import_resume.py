"""``audiences import`` against a real server behind a proxy that drops the connection in the
middle of uploads: an upload cut on every try fails with one clear line and exit 5 and imports
nothing; running the same command again imports the file once, however many of its uploads
were cut or completed before (the key is derived from the file, the audience and the options),
and ``--again`` imports it anew (issue #16's interrupted upload)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from audiences.cli import app
from audiences.sdk import Client
from audiences.sdk.resources.imports import Calls
from tests.e2e.conftest import Server
from tests.sdk.receivers import Cuts, proxy, serving

IDS = 300_000  # about 3 MB: several 1 MiB chunks, so the cut lands in the middle


@pytest.fixture
def ids_file(tmp_path: Path) -> Path:
    path = tmp_path / "ids.txt"
    path.write_bytes(b"".join(b"resume-%07d\n" % number for number in range(IDS)))
    return path


def _import(url: str, token: str, *args: str) -> Result:
    env = {"AUDIENCES_URL": url, "AUDIENCES_API_KEY": token}
    return CliRunner().invoke(app, ["import", *args, "--json"], env=env)


def _imports(client: Client, audience_id: str) -> list[str]:
    return [job.id for job in client.jobs.list(subject_id=audience_id, kind="import")]


def test_a_cut_upload_fails_cleanly_and_a_rerun_imports_once(
    live_server: Server, ids_file: Path
) -> None:
    key = f"resume-{uuid.uuid4().hex[:8]}"
    with Client(live_server.base_url, key=live_server.token) as client:
        audience = client.audiences.create(key=key, name="Resume", kind="static")
        args = (str(ids_file), "--into", key, "--mode", "replace")
        cuts = Cuts(left=100)
        with serving(proxy(live_server.base_url, cuts=cuts)) as (url, log):
            failed = _import(url, live_server.token, *args)
            assert failed.exit_code == 5, (failed.stdout, failed.stderr)
            (line, hint) = failed.stderr.strip().splitlines()
            assert line.startswith(f"error: the upload of {ids_file} was interrupted after ")
            assert f"of {ids_file.stat().st_size:,} bytes" in line
            assert hint.startswith("hint: run the same command again")
            assert "Traceback" not in failed.stderr + failed.stdout
            uploads = [a for a in log if a.path.split("?")[0].endswith("/imports")]
            assert len(uploads) == 4 and all(len(a.body) < ids_file.stat().st_size for a in uploads)
            assert _imports(client, audience.id) == []  # nothing half-imported

            cuts.left = 1  # the rerun's first try is cut again, its retry arrives whole
            done = _import(url, live_server.token, *args)
            assert done.exit_code == 0, (done.stdout, done.stderr)
            first = done.stdout
        job_id = _json_id(first)
        assert _imports(client, audience.id) == [job_id]
        assert client.audiences.members(audience).first_page().total == IDS

        again = _import(live_server.base_url, live_server.token, *args)  # the same command
        assert again.exit_code == 0, (again.stdout, again.stderr)
        assert _json_id(again.stdout) == job_id  # answered by the first import: none added
        assert _imports(client, audience.id) == [job_id]

        anew = _import(live_server.base_url, live_server.token, *args, "--again")
        assert anew.exit_code == 0, (anew.stdout, anew.stderr)
        assert _json_id(anew.stdout) != job_id
        assert len(_imports(client, audience.id)) == 2


def test_another_mode_or_file_is_another_import(ids_file: Path) -> None:
    def key_of(path: Path, **options: str) -> str:
        return Calls.create("a1", path, **options).headers["Idempotency-Key"]  # type: ignore[arg-type]

    same = key_of(ids_file)
    assert key_of(ids_file) == same and len(same) <= 255
    assert key_of(ids_file, mode="remove") != same
    other = ids_file.with_name("other.txt")
    other.write_bytes(ids_file.read_bytes() + b"one-more\n")
    assert key_of(other) != same
    assert Calls.create("a2", ids_file).headers["Idempotency-Key"] != same


def _json_id(stdout: str) -> str:
    return str(json.loads(stdout)["id"])
