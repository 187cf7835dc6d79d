"""A loaded workspace to ingest into: 1M profiles and 10M events, as ``POST /v1/events`` leaves
a table after 180 days (events appended in the order they arrived, most with a client
``event_id``), built once into a folder and copied for each run that writes to it.

    .venv/bin/python -m bench.events.run --only ingest --loaded /var/tmp/loaded-1m
    .venv/bin/python -m bench.events.stages --loaded /var/tmp/loaded-1m

A run copies the folder (the data folder of a server: metadata database and DuckDB file), so
every run, of every tree, starts from the same table. The profiles are ``user-0`` ..
``user-<N-1>`` (``bench.membership.data``); :func:`external_id` spreads the ingest bodies'
profiles over them.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from bench.events import data
from bench.membership.run import Bench

CHUNK = 2_000_000
ID_SHARE = 90
"""Percent of events with a client ``event_id``, in the load and in the ingest bodies (the
SDKs of Segment, Amplitude and RudderStack send one with every event)."""
NEW_SHARE = 20
"""One ingest profile in this many is new to the workspace; the others are stored ones."""
TEMPLATE = "template"
VERSION = 2
"""Of the loaded data; a folder built by another version is built again."""


def build(folder: Path, profiles: int, events: int) -> Iterator[str]:
    """The loaded data folder under ``folder``, built unless it exists with the same sizes."""
    template = folder / TEMPLATE
    marker = folder / f"{profiles}-{events}-v{VERSION}.done"
    if marker.exists():
        yield f"Loaded workspace reused: {folder} ({profiles:,} profiles, {events:,} events)."
        return
    shutil.rmtree(template, ignore_errors=True)
    for old in folder.glob("*.done"):
        old.unlink()
    template.mkdir(parents=True)
    started = time.perf_counter()
    bench = Bench(template)
    try:
        data.bulk_load(
            bench,
            profiles,
            events,
            chunk=CHUNK,
            now=datetime.now(UTC),
            arrived=events,
            id_share=ID_SHARE,
        )
        bench.engine._con.cursor().execute("CHECKPOINT")
    finally:
        bench.close()
    marker.touch()
    yield (
        f"Loaded {profiles:,} profiles and {events:,} events into {template} in"
        f" {time.perf_counter() - started:.1f} s (bulk SQL: received in order over the last"
        f" {data.DAYS} days, {ID_SHARE}% with an event_id)."
    )


def copy(folder: Path, into: Path) -> Path:
    """A fresh copy of the loaded data folder at ``into`` (which must not exist)."""
    shutil.copytree(folder / TEMPLATE, into)
    return into


def external_id(number: int, profiles: int) -> str:
    """The profile the ``number``-th generated profile stands for: a new one (``new-<number>``)
    for every ``NEW_SHARE``-th number, else the stored ``user-<number * 7919 % profiles>``,
    which spreads them over the table. Not a bijection: the multiples of ``NEW_SHARE`` never
    name a stored profile, so below ``profiles`` one stored profile in ``NEW_SHARE`` is not
    reached (when 7919 and ``profiles`` are coprime, each other one once)."""
    if number % NEW_SHARE == 0:
        return f"new-{number}"
    return f"user-{number * 7919 % profiles}"
