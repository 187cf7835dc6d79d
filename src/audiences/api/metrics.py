"""Prometheus metrics: request counts and latencies by route, the job queue by state, and
external audiences' syncs (attempts, failures, status) and destination deliveries (attempts,
failures, backlog, lag from change to delivery).

Each app has a registry of its own (several apps may live in one process, as in tests); the job
sync and delivery figures are read from the database when ``/metrics`` is scraped, so they are never
stale and count the work of every process.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from audiences.kit.clock import utcnow
from audiences.services import attempt_totals, syncs
from audiences.store.tables import (
    DestinationMessageRow,
    DestinationRow,
    JobRow,
    MembershipChangeRow,
)

LAG_WINDOW = timedelta(hours=1)
"""How far back the delivery lag quantiles look."""
LAG_SAMPLE = 10_000

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """The app's metrics and the middleware that records them."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "audiences_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "audiences_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template.",
            ["method", "route"],
            registry=self.registry,
        )
        self.registry.register(_JobCollector(session_factory))
        self.registry.register(_SyncCollector(session_factory))
        self.registry.register(_DeliveryCollector(session_factory))

    def exposition(self) -> bytes:
        """The metrics in the Prometheus text format."""
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts and times every HTTP request under its route template
    (``/v1/audiences/{audience_id}``, never the raw path, so label values stay few)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = str(scope.get("method", ""))
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)


class _JobCollector(Collector):
    """Jobs by state and handler, counted at scrape time."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self.session_factory = session_factory

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "audiences_jobs", "Jobs in the queue by state and handler.", labels=["state", "handler"]
        )
        stmt = select(JobRow.state, JobRow.handler, func.count()).group_by(
            JobRow.state, JobRow.handler
        )
        with self.session_factory() as session:
            for state, handler, count in session.execute(stmt):
                gauge.add_metric([state, handler], count)
        yield gauge


class _SyncCollector(Collector):
    """External audiences' syncs: every attempt and failure so far, and the audiences by the
    status of their sync, read at scrape time."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self.session_factory = session_factory

    def collect(self) -> Iterator[Metric]:
        with self.session_factory() as session:
            attempts, failures, by_status = syncs.totals(session)
        yield CounterMetricFamily(
            "audiences_sync_attempts", "Syncs of external audiences run so far.", value=attempts
        )
        yield CounterMetricFamily(
            "audiences_sync_failures",
            "Syncs of external audiences that failed (their members kept).",
            value=failures,
        )
        gauge = GaugeMetricFamily(
            "audiences_syncs", "External audiences by the status of their sync.", labels=["status"]
        )
        for status, count in sorted(by_status.items()):
            gauge.add_metric([status], count)
        yield gauge


class _DeliveryCollector(Collector):
    """Deliveries, read from the database at scrape time (workers may be other processes):
    attempts and failures by destination kind, messages waiting, outbox rows, and the lag from
    a message's first change to its delivery over the last hour."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self.session_factory = session_factory

    def collect(self) -> Iterator[Metric]:
        attempts = CounterMetricFamily(
            "audiences_destination_attempts",
            "Delivery attempts by destination kind and outcome (delivered or failed).",
            labels=["kind", "outcome"],
        )
        waiting = GaugeMetricFamily(
            "audiences_destination_backlog_messages",
            "Messages not delivered yet, by destination kind.",
            labels=["kind"],
        )
        outbox = GaugeMetricFamily(
            "audiences_membership_outbox_rows",
            "Recorded membership revisions some destination has not taken yet.",
        )
        lag = GaugeMetricFamily(
            "audiences_destination_lag_seconds",
            "Seconds from a message's first membership change to its delivery, over the last "
            "hour, by quantile (0.5, 0.99, 1 for the maximum).",
            labels=["quantile"],
        )
        with self.session_factory() as session:
            # Counted as attempts are logged (never down, as the log's rows are deleted).
            for (kind, outcome), count in attempt_totals.totals(
                session, attempt_totals.DELIVERY
            ).items():
                attempts.add_metric([kind, outcome], count)
            pending = session.execute(
                select(DestinationRow.kind, func.count())
                .select_from(DestinationMessageRow)
                .join(DestinationRow, DestinationRow.id == DestinationMessageRow.destination_id)
                .where(DestinationMessageRow.status == "pending")
                .group_by(DestinationRow.kind)
            )
            for kind, count in pending:
                waiting.add_metric([kind], count)
            outbox.add_metric(
                [], session.scalar(select(func.count(MembershipChangeRow.revision))) or 0
            )
            delays = sorted(
                (delivered - first).total_seconds()
                for first, delivered in session.execute(
                    select(
                        DestinationMessageRow.first_change_at, DestinationMessageRow.delivered_at
                    )
                    .where(DestinationMessageRow.delivered_at >= utcnow() - LAG_WINDOW)
                    .where(DestinationMessageRow.first_change_at.is_not(None))
                    .limit(LAG_SAMPLE)
                )
                if first is not None and delivered is not None
            )
        if delays:
            for quantile in (0.5, 0.99, 1.0):
                index = min(len(delays) - 1, int(quantile * len(delays)))
                lag.add_metric([str(quantile)], max(0.0, delays[index]))
        yield attempts
        yield waiting
        yield outbox
        yield lag
