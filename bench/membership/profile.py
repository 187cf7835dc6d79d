"""Where the time of the membership benchmark's slow paths goes, by cProfile.

    .venv/bin/python -m bench.membership.profile                    # 1M profiles
    .venv/bin/python -m bench.membership.profile --profiles 5000000

Sets up the same workspace as ``bench.membership.run`` and profiles, in process: 20
``select_members`` calls (cold) and 20 ``refresh`` calls (warm), a few 1,000-record
``profiles.upsert`` calls with the 50 streaming audiences, and is-member calls with
authentication as the HTTP dependency runs it.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import random
import tempfile
from collections.abc import Callable
from pathlib import Path

from audiences.api.routes import members as member_routes
from audiences.services import api_keys, evaluation, profiles
from bench.membership import data, workload
from bench.membership.run import Bench, ours_refresh, ours_select

SECTIONS = ("batch", "refresh", "upsert", "is-member")


def profiled(label: str, work: Callable[[], None], top: int) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    work()
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs()
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    print(f"## {label}\n{out.getvalue()}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--only", choices=SECTIONS, action="append")
    args = parser.parse_args(argv)
    count, only = args.profiles, set(args.only or SECTIONS)
    with tempfile.TemporaryDirectory() as folder:
        bench = Bench(Path(folder))
        data.bulk_load(bench.engine, bench.ws, count)
        bench.create_audiences({k: rule for k, (rule, _) in workload.BATCH.items()}, "manual")
        bench.create_audiences(dict([workload.EVERYONE]), "manual")
        bench.create_audiences(workload.streaming_rules(), "streaming")
        with bench.factory.begin() as session:
            evaluation.refresh_all(
                session, runtime=bench.runtime, workspace_id=bench.ws, trigger="bench"
            )
        ours_select(bench)
        if "batch" in only:
            profiled("20 x select_members, cold", lambda: ours_select(bench), args.top)
        if "refresh" in only:
            ours_refresh(bench, cold=False)
            profiled("20 x refresh, warm", lambda: ours_refresh(bench, cold=False), args.top)
        rng = random.Random(5)

        def upserts() -> None:
            for n in range(5):
                records = data.upsert_batch(rng, 1000, f"p{n}", count)
                with bench.factory.begin() as session:
                    profiles.upsert(
                        session, caller=bench.caller, runtime=bench.runtime, records=records
                    )

        if "upsert" in only:
            profiled("5 x profiles.upsert of 1,000 records", upserts, args.top)
        keys = list(bench.ids)

        def is_member() -> None:
            for n in range(300):
                with bench.factory() as session:
                    caller = api_keys.authenticate(session, bench.token)
                    member_routes.get_membership(
                        bench.ids[keys[n % len(keys)]],
                        f"user-{rng.randrange(count)}",
                        session,
                        caller,
                        bench.runtime,
                        explain=False,
                    )
                    session.commit()

        if "is-member" in only:
            profiled("300 x is-member with authentication", is_member, args.top)
        bench.close()


if __name__ == "__main__":
    main()
