"""File imports against DuckDB's own ``read_csv`` joined to the id map, and against DuckDB doing
the import's whole work.

    .venv/bin/python -m bench.imports.run          # quick: 1M ids, 0.5M profiles already held
    .venv/bin/python -m bench.imports.run --full   # 10M ids, 5M profiles already held

A workspace is given ``--profiles`` profiles (ids ``u0`` …), then a CSV of ``--ids`` ids
(``u0`` … ``u<ids-1>``, so half are known and half new at the defaults) is imported into a
static audience by the ``import.rows`` handler, run by a worker in a process of its own; the
limit is DuckDB reading the same file and joining it to the profiles' ids, in a process of
its own too. A second reference has DuckDB alone do the import's whole work on a copy of the
profiles: read the file, create the profiles it does not hold yet, build the bitmap of pids.
Each reports rows per second and its process's peak memory (``ru_maxrss``). JSON membership
writes are measured end to end over HTTP by :mod:`bench.http.run`.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

WORKSPACE = "bench"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="10M ids against 5M profiles")
    parser.add_argument("--ids", type=int, help="ids in the file")
    parser.add_argument("--profiles", type=int, help="profiles the workspace already holds")
    parser.add_argument("--stage", choices=list(STAGES), help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        result = STAGES[args.stage](Path(args.dir), args)
        print(json.dumps(result))
        return
    ids = args.ids or (10_000_000 if args.full else 1_000_000)
    profiles = args.profiles or ids // 2
    with tempfile.TemporaryDirectory(prefix="bench-imports-") as folder:
        common = ["--dir", folder, "--ids", str(ids), "--profiles", str(profiles)]
        setup = _stage("setup", common)
        limit = _stage("limit", common)
        whole = _stage("limit_with_profiles", common)
        ours = _stage("ours", common)
    _report(ids, profiles, setup, limit, whole, ours)


def _stage(name: str, common: list[str]) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.imports.run", "--stage", name, *common]
    output = subprocess.run(command, capture_output=True, text=True, check=False)
    if output.returncode:
        raise SystemExit(f"stage {name} failed:\n{output.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(output.stdout.strip().splitlines()[-1])
    return result


def _settings(folder: Path) -> Any:
    from audiences.config import Settings

    return Settings(
        data_dir=folder / "data",
        database_url=f"sqlite:///{folder / 'audiences.db'}",
        worker_threads=0,
        scheduler_seconds=0,
    )


def setup(folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The metadata database, the workspace's profiles, a static audience and the CSV file."""
    from audiences.engines.duckdb import DuckDBEngine
    from audiences.services import workspaces
    from audiences.store.db import make_engine, make_session_factory
    from audiences.store.migrate import migrate
    from audiences.store.tables import AudienceRow

    settings = _settings(folder)
    engine = make_engine(settings.metadata_url)
    migrate(engine)
    with make_session_factory(engine).begin() as session:
        workspace = workspaces.ensure(session, slug=WORKSPACE)
        session.add(AudienceRow(workspace_id=workspace.id, key="list", name="list", kind="static"))
        workspace_id = workspace.id
    started = time.perf_counter()
    profiles = DuckDBEngine(settings.data_dir)
    for start in range(0, args.profiles, 1_000_000):
        stop = min(start + 1_000_000, args.profiles)
        profiles.ensure_profiles(workspace_id, [f"u{i}" for i in range(start, stop)])
    profiles.close()
    loaded = time.perf_counter() - started
    with (folder / "ids.csv").open("w") as out:
        out.write("id\n")
        for start in range(0, args.ids, 1_000_000):
            stop = min(start + 1_000_000, args.ids)
            out.write("".join(f"u{i}\n" for i in range(start, stop)))
    return {"workspace_id": workspace_id, "load_seconds": loaded}


def limit(folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """DuckDB reads the file and joins it to the workspace's ids: the practical limit."""
    import duckdb

    from audiences.engines.duckdb_sql import table_name
    from audiences.store.db import make_engine
    from audiences.store.tables import WorkspaceRow

    engine = make_engine(_settings(folder).metadata_url)
    with engine.connect() as connection:
        workspace_id = (
            connection.execute(
                WorkspaceRow.__table__.select().where(WorkspaceRow.slug == WORKSPACE)
            )
            .one()
            ._mapping["id"]
        )
    con = duckdb.connect(str(folder / "data" / "profiles.duckdb"), read_only=True)
    table = table_name(workspace_id)
    started = time.perf_counter()
    found = con.execute(
        f'SELECT count(p.pid) FROM read_csv(?, header = true, columns = {{"id": "VARCHAR"}}) c'
        f' JOIN "{table}" p ON p.external_id = c.id',
        [str(folder / "ids.csv")],
    ).fetchone()
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "matched": found[0] if found else 0, "peak_mb": _peak_mb()}


def limit_with_profiles(folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """DuckDB alone doing the import's whole work, on a copy of the profiles: read the file,
    create a profile for each id not held yet, and build the bitmap of every id's pid."""
    import shutil

    from audiences.engines.base import pids_to_bitmap
    from audiences.engines.duckdb import DuckDBEngine

    copy = folder / "copy"
    copy.mkdir()
    shutil.copyfile(folder / "data" / "profiles.duckdb", copy / "profiles.duckdb")
    profiles = DuckDBEngine(copy, memory_limit=_settings(folder).profile_memory_limit)
    workspace = profiles._workspace(_workspace_id(folder))
    assert workspace is not None
    con = profiles._con.cursor()
    started = time.perf_counter()
    con.execute(
        "CREATE TEMP TABLE ids AS SELECT DISTINCT id"
        ' FROM read_csv(?, header = true, columns = {"id": "VARCHAR"})',
        [str(folder / "ids.csv")],
    )
    con.execute(
        f"INSERT INTO {workspace.table} (pid, external_id, updated_at)"
        f" SELECT nextval('{workspace.sequence}'), id, now()"
        f" FROM ids ANTI JOIN {workspace.table} p ON p.external_id = ids.id"
    )
    pids = con.execute(
        f"SELECT p.pid FROM ids JOIN {workspace.table} p ON p.external_id = ids.id"
    ).fetchnumpy()["pid"]
    members = pids_to_bitmap(pids)
    seconds = time.perf_counter() - started
    profiles.close()
    return {"seconds": seconds, "matched": len(members), "peak_mb": _peak_mb()}


def _workspace_id(folder: Path) -> str:
    from audiences.store.db import make_engine
    from audiences.store.tables import WorkspaceRow

    engine = make_engine(_settings(folder).metadata_url)
    with engine.connect() as connection:
        row = connection.execute(
            WorkspaceRow.__table__.select().where(WorkspaceRow.slug == WORKSPACE)
        ).one()
    return str(row._mapping["id"])


def ours(folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Accept the file as the upload route does, then run ``import.rows`` on a worker."""
    import shutil

    from sqlalchemy import select

    from audiences.engines.duckdb import DuckDBEngine
    from audiences.jobs.worker import Worker
    from audiences.membership.cache import BitmapCache
    from audiences.schemas.api_keys import Role
    from audiences.services import imports
    from audiences.services.callers import Caller
    from audiences.services.import_formats import ImportFormat
    from audiences.services.runtime import Runtime
    from audiences.store.db import make_engine, make_session_factory
    from audiences.store.tables import AudienceRow, JobRow, WorkspaceRow

    settings = _settings(folder)
    factory = make_session_factory(make_engine(settings.metadata_url))
    with factory.begin() as session:
        workspace = session.scalars(
            select(WorkspaceRow).where(WorkspaceRow.slug == WORKSPACE)
        ).one()
        audience = session.scalars(select(AudienceRow)).one()
        caller = Caller(workspace.id, WORKSPACE, "bench", Role.WRITE)
        upload = imports.folder(settings.data_dir, workspace.id, "bench-upload") / imports.UPLOAD
        upload.parent.mkdir(parents=True)
        shutil.copyfile(folder / "ids.csv", upload)
        options = imports.ImportOptions("add", ImportFormat.CSV, None, None)
        job_id = imports.accept(
            session,
            caller=caller,
            audience_id=audience.id,
            upload=upload,
            options=options,
            digest="bench",
            max_attempts=1,
        ).id
    profiles = DuckDBEngine(settings.data_dir, memory_limit=settings.profile_memory_limit)
    runtime = Runtime(profiles=profiles, bitmaps=BitmapCache())
    worker = Worker(session_factory=factory, settings=settings, runtime=runtime)
    started = time.perf_counter()
    while worker.run_once():
        pass
    seconds = time.perf_counter() - started
    with factory() as session:
        job = session.get_one(JobRow, job_id)
        state, counts = job.state, dict(job.counts)
    runtime.profiles.close()
    return {"seconds": seconds, "state": state, "counts": counts, "peak_mb": _peak_mb()}


STAGES = {
    "setup": setup,
    "limit": limit,
    "limit_with_profiles": limit_with_profiles,
    "ours": ours,
}


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _report(
    ids: int,
    profiles: int,
    setup_: dict[str, Any],
    limit_: dict[str, Any],
    whole: dict[str, Any],
    ours_: dict[str, Any],
) -> None:
    loaded = setup_["load_seconds"]
    limit_rate, ours_rate = ids / limit_["seconds"], ids / ours_["seconds"]
    whole_rate = ids / whole["seconds"]
    lines = [
        f"{platform.machine()}, Python {platform.python_version()}",
        f"{ids:,} ids in the file, {profiles:,} profiles held ({loaded:.1f} s to load)",
        f"ours: {ours_['state']}, counts {ours_['counts']}",
        "| path | seconds | ids/s | peak memory |",
        "| --- | ---: | ---: | ---: |",
        _row("DuckDB read_csv joined to the id map (limit)", limit_, limit_rate),
        _row("DuckDB alone: read_csv, new profiles created, bitmap of pids", whole, whole_rate),
        _row("import.rows (ours)", ours_, ours_rate),
        f"ours / limit: {ours_rate / limit_rate:.2f}x;"
        f" ours / DuckDB doing the same work: {ours_rate / whole_rate:.2f}x",
    ]
    print("\n".join(lines))


def _row(name: str, measured: dict[str, Any], rate: float) -> str:
    return f"| {name} | {measured['seconds']:.2f} | {rate:,.0f} | {measured['peak_mb']:.0f} MB |"


if __name__ == "__main__":
    main()
