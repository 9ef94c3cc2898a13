"""Prometheus exposition of the master: ``GET /metrics`` on its HTTP port.

Nothing here runs per heartbeat: the collectors read state that exists anyway (the
latest telemetry per worker, the counters of the gRPC service, the hub, the store)
only when Prometheus scrapes. Each collector is two small parts:

- ``read``: on the event loop, copies what it exposes (counters, counts, the list of
  the workers' published states, which are never mutated) into plain figures;
- ``families``: pure, figures -> metric families (``prometheus_client``'s
  ``GaugeMetricFamily``/``CounterMetricFamily``/``HistogramMetricFamily``).

A scrape reads every collector on the loop (``MasterMetrics.stage``: about a
millisecond at 10,000 workers) and writes the text in a thread (``asyncio.to_thread``):
the event loop is never held for the whole exposition. The per-worker families, nearly
every line at that size, are in master/worker_metrics.py. Each
master has its own ``CollectorRegistry`` (``MasterMetrics.registry``), never the
process-wide default one.

Names: ``cloudai_`` prefix, the unit in the name (``_percent``, ``_bytes``,
``_seconds``), ``_total`` on counters. The worker is a label (``worker_id``), and the
only ids exposed are those of workers the master knows (seen since it started, or in
its registry): removed workers disappear at the next scrape. See docs/METRICS.md.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from cloudai.history.recorder import HistoryStats
from cloudai.master.loop_lag import LagReading, LoopLagMonitor
from cloudai.master.persistence import MasterPersistence
from cloudai.master.rate_meter import RateMeter
from cloudai.master.tasks import TaskBook
from cloudai.master.worker_metrics import worker_families, worker_text
from cloudai.master.ws_hub import TelemetryHub, tick_interval
from cloudai.task_status import TaskStatus
from cloudai.telemetry.liveness import LivenessState
from cloudai.telemetry.manager import TelemetryManager
from cloudai.telemetry.model import WorkerTelemetry

METRICS_PATH = "/metrics"
GZIP_LEVEL = 1
"""Scrapes are large (19 MB of text at 10,000 workers) and repetitive: level 1 shrinks
them about 20 times at half the CPU of the default level."""

T = TypeVar("T")
Families = Callable[[T], Iterable[Metric]]

AlertCounts = Callable[[], Mapping[tuple[str, str], int]]
"""How many alerts are in each (rule, state): the alert engine's answer, exposed as
``cloudai_alerts{rule,state}``. Called on the event loop at each scrape."""


# -- the collector pattern --------------------------------------------------------------------


class Recorded(Generic[T]):
    """A collector of figures already read: ``collect()`` is ``families(figures)``.
    Safe in any thread (it touches nothing live); tests build one from recorded data."""

    __slots__ = ("_families", "figures")

    def __init__(self, figures: T, families: Families[T]) -> None:
        self.figures = figures
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families(self.figures)


class LiveCollector(Generic[T]):
    """``read`` (on the event loop) then ``families``; ``collect()`` does both at once
    (prometheus_client's collector interface, for a registry used in one thread)."""

    __slots__ = ("_families", "_read")

    def __init__(self, read: Callable[[], T], families: Families[T]) -> None:
        self._read = read
        self._families = families

    def staged(self) -> Recorded[T]:
        return Recorded(self._read(), self._families)

    def collect(self) -> Iterable[Metric]:
        return self.staged().collect()


class Scrape:
    """One scrape's figures, read on the loop; safe to expose in any thread: the workers'
    published states (never mutated), the other collectors' figures, and the process
    collectors (they read /proc and the interpreter)."""

    def __init__(self, workers: Sequence[WorkerTelemetry], collectors: Sequence[Collector]) -> None:
        self.workers = workers
        self._collectors = collectors

    def collect(self) -> Iterator[Metric]:
        """Every family (prometheus_client's collector interface)."""
        yield from worker_families(self.workers)
        for collector in self._collectors:
            yield from collector.collect()

    def render(self) -> bytes:
        """The text exposition: what ``generate_latest(self)`` gives, with the
        per-worker block written by ``worker_text``."""
        rest = generate_latest(_Collectors(self._collectors))
        return worker_text(self.workers).encode() + rest


class _Collectors:
    def __init__(self, collectors: Sequence[Collector]) -> None:
        self._collectors = collectors

    def collect(self) -> Iterator[Metric]:
        for collector in self._collectors:
            yield from collector.collect()


# -- the master's own metrics -----------------------------------------------------------------


class ServiceCounts(Protocol):
    """The gRPC service's counters (``service.ServiceStats``)."""

    registrations: int
    registrations_refused: int
    refused_duplicates: int
    heartbeats: int
    heartbeats_unknown: int
    invalid_messages: int
    streams_opened: int
    streams_broken: int
    results: int
    results_not_stored: int
    refused_credentials: int


@dataclass(frozen=True, slots=True)
class IngestFigures:
    """The heartbeat path: the gRPC service and the telemetry manager."""

    accepted: int
    not_registered: int  # refused: the worker holds no session (NOT_FOUND)
    coalesced: int  # dropped from a full per-worker queue: a newer one replaced it
    processed: int
    per_second: float
    invalid_messages: int  # every RPC
    refused_credentials: int  # every RPC
    registrations: int
    registrations_refused: int
    registrations_duplicate: int
    streams_opened: int
    streams_broken: int
    results: int
    results_not_stored: int
    master_stalls: int
    connectivity_events: int


def ingest_families(f: IngestFigures) -> Iterator[Metric]:
    yield CounterMetricFamily(
        "cloudai_heartbeats_accepted_total", "Heartbeats accepted", value=f.accepted
    )
    refused = CounterMetricFamily(
        "cloudai_heartbeats_refused_total",
        "Heartbeats refused, by reason (not_registered: the worker holds no session)",
        labels=["reason"],
    )
    refused.add_metric(["not_registered"], f.not_registered)
    yield refused
    yield CounterMetricFamily(
        "cloudai_heartbeats_coalesced_total",
        "Heartbeats dropped unapplied because a newer one of the same worker replaced them",
        value=f.coalesced,
    )
    yield CounterMetricFamily(
        "cloudai_heartbeats_processed_total", "Heartbeats applied", value=f.processed
    )
    yield GaugeMetricFamily(
        "cloudai_heartbeats_per_second",
        "Heartbeats accepted per second over the last 10 s",
        value=f.per_second,
    )
    yield CounterMetricFamily(
        "cloudai_grpc_invalid_messages_total",
        "gRPC messages refused as invalid (INVALID_ARGUMENT)",
        value=f.invalid_messages,
    )
    yield CounterMetricFamily(
        "cloudai_grpc_refused_credentials_total",
        "gRPC calls refused for their certificate",
        value=f.refused_credentials,
    )
    yield CounterMetricFamily(
        "cloudai_registrations_total", "RegisterWorker calls accepted", value=f.registrations
    )
    registrations_refused = CounterMetricFamily(
        "cloudai_registrations_refused_total",
        "RegisterWorker calls refused, by reason",
        labels=["reason"],
    )
    registrations_refused.add_metric(["refused"], f.registrations_refused)
    registrations_refused.add_metric(["duplicate"], f.registrations_duplicate)
    yield registrations_refused
    yield CounterMetricFamily(
        "cloudai_heartbeat_streams_opened_total",
        "StreamHeartbeats calls opened",
        value=f.streams_opened,
    )
    yield CounterMetricFamily(
        "cloudai_heartbeat_streams_broken_total",
        "StreamHeartbeats calls that ended in an error",
        value=f.streams_broken,
    )
    yield CounterMetricFamily("cloudai_task_results_total", "Task results stored", value=f.results)
    yield CounterMetricFamily(
        "cloudai_task_results_not_stored_total",
        "Task results answered UNAVAILABLE: the store could not commit them",
        value=f.results_not_stored,
    )
    yield CounterMetricFamily(
        "cloudai_master_stalls_total",
        "Times the liveness checker fired late by more than a quarter of the timeout",
        value=f.master_stalls,
    )
    yield CounterMetricFamily(
        "cloudai_connectivity_events_total",
        "Times every worker went silent at once",
        value=f.connectivity_events,
    )


@dataclass(frozen=True, slots=True)
class StreamFigures:
    """The WebSocket fan-out (``TelemetryHub``)."""

    clients: int
    clients_behind: int
    frames_built: int
    frames_sent: int
    direct_frames: int
    bytes_sent: int
    send_errors: int
    coalesced_updates: int
    tick_seconds: float


def stream_families(f: StreamFigures) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "cloudai_stream_clients", "WebSocket telemetry clients connected", value=f.clients
    )
    yield GaugeMetricFamily(
        "cloudai_stream_clients_behind",
        "WebSocket clients with frames waiting (slow clients, coalescing)",
        value=f.clients_behind,
    )
    yield CounterMetricFamily(
        "cloudai_stream_frames_built_total",
        "Telemetry frames built (one per fan-out tick with changes)",
        value=f.frames_built,
    )
    yield CounterMetricFamily(
        "cloudai_stream_frames_sent_total",
        "Frames sent to WebSocket clients",
        value=f.frames_sent,
    )
    yield CounterMetricFamily(
        "cloudai_stream_direct_frames_total",
        "Frames written straight to the socket of a client that keeps up",
        value=f.direct_frames,
    )
    yield CounterMetricFamily(
        "cloudai_stream_sent_bytes_total",
        "Payload bytes of the frames sent to WebSocket clients",
        value=f.bytes_sent,
    )
    yield CounterMetricFamily(
        "cloudai_stream_send_errors_total",
        "Sends to WebSocket clients that failed",
        value=f.send_errors,
    )
    yield CounterMetricFamily(
        "cloudai_stream_coalesced_updates_total",
        "Worker updates a slow client never received because a newer one replaced them",
        value=f.coalesced_updates,
    )
    yield GaugeMetricFamily(
        "cloudai_stream_tick_seconds",
        "The fan-out tick for the clients connected now",
        value=f.tick_seconds,
    )


@dataclass(frozen=True, slots=True)
class StoreFigures:
    """The store's writers: group commit (tasks), registry write-behind, heartbeat times."""

    write_lag_seconds: float
    pending_task_writes: int
    queued_registry_writes: int
    pending_heartbeat_times: int
    transactions: int
    operations: int
    failed_operations: int
    registry_write_failures: int
    heartbeat_flushes: int
    heartbeat_flush_failures: int


def store_families(f: StoreFigures) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "cloudai_store_write_lag_seconds",
        "How long the oldest task write not yet committed has waited (0: none waits)",
        value=f.write_lag_seconds,
    )
    pending = GaugeMetricFamily(
        "cloudai_store_pending_writes", "Writes queued for the store, by writer", labels=["writer"]
    )
    pending.add_metric(["tasks"], f.pending_task_writes)
    pending.add_metric(["registry"], f.queued_registry_writes)
    pending.add_metric(["heartbeat_times"], f.pending_heartbeat_times)
    yield pending
    yield CounterMetricFamily(
        "cloudai_store_transactions_total",
        "Group-commit transactions committed",
        value=f.transactions,
    )
    yield CounterMetricFamily(
        "cloudai_store_task_writes_total", "Task writes committed", value=f.operations
    )
    failures = CounterMetricFamily(
        "cloudai_store_write_failures_total",
        "Store writes that failed, by writer",
        labels=["writer"],
    )
    failures.add_metric(["tasks"], f.failed_operations)
    failures.add_metric(["registry"], f.registry_write_failures)
    failures.add_metric(["heartbeat_times"], f.heartbeat_flush_failures)
    yield failures
    yield CounterMetricFamily(
        "cloudai_store_heartbeat_flushes_total",
        "Batches of heartbeat times written",
        value=f.heartbeat_flushes,
    )


@dataclass(frozen=True, slots=True)
class ClusterFigures:
    """Counts by state: workers by liveness state, tasks by status (every value listed)."""

    workers: Mapping[str, int]
    tasks: Mapping[str, int]


def cluster_families(f: ClusterFigures) -> Iterator[Metric]:
    workers = GaugeMetricFamily(
        "cloudai_workers", "Workers the master knows, by liveness state", labels=["state"]
    )
    for state, count in f.workers.items():
        workers.add_metric([state], count)
    yield workers
    tasks = GaugeMetricFamily("cloudai_tasks", "Tasks by status", labels=["status"])
    for status, count in f.tasks.items():
        tasks.add_metric([status], count)
    yield tasks


def loop_lag_families(reading: LagReading) -> Iterator[Metric]:
    yield HistogramMetricFamily(
        "cloudai_event_loop_lag_seconds",
        "How late a probe task woke up on the master's event loop (every 0.5 s)",
        buckets=[(floatToGoString(bound), count) for bound, count in reading.buckets],
        sum_value=reading.total,
    )
    yield GaugeMetricFamily(
        "cloudai_event_loop_lag_latest_seconds",
        "The event-loop lag the latest probe measured",
        value=reading.last,
    )


@dataclass(frozen=True, slots=True)
class HistoryFigures:
    """The telemetry history's recorder (``history.recorder.HistoryStats``)."""

    samples: int
    dropped: int
    rows_written: int
    buckets_written: int
    failed_batches: int
    pruned: int
    writer_restarts: int = 0


def history_families(f: HistoryFigures) -> Iterator[Metric]:
    yield CounterMetricFamily(
        "cloudai_history_samples_total", "Heartbeats taken into the history", value=f.samples
    )
    yield CounterMetricFamily(
        "cloudai_history_samples_dropped_total",
        "History samples dropped unwritten because the store fell behind",
        value=f.dropped,
    )
    rows = CounterMetricFamily(
        "cloudai_history_rows_written_total",
        "History rows written, by tier (raw: every heartbeat; aggregate: minute and hour)",
        labels=["tier"],
    )
    rows.add_metric(["raw"], f.rows_written)
    rows.add_metric(["aggregate"], f.buckets_written)
    yield rows
    yield CounterMetricFamily(
        "cloudai_history_write_failures_total",
        "History batches the store could not write",
        value=f.failed_batches,
    )
    yield CounterMetricFamily(
        "cloudai_history_rows_pruned_total",
        "History rows deleted past their retention",
        value=f.pruned,
    )
    yield CounterMetricFamily(
        "cloudai_history_writer_restarts_total",
        "History writer processes started again after one exited",
        value=f.writer_restarts,
    )


@dataclass(frozen=True, slots=True)
class HandoffFigures:
    """The synchronous gRPC server's hand-off of heartbeats to the event loop."""

    batches: int
    refused: int


def handoff_families(f: HandoffFigures) -> Iterator[Metric]:
    yield CounterMetricFamily(
        "cloudai_grpc_sync_batches_total",
        "Batches of heartbeats the synchronous gRPC server handed to the event loop",
        value=f.batches,
    )
    yield CounterMetricFamily(
        "cloudai_grpc_sync_refused_total",
        "Heartbeats the synchronous gRPC server refused (UNAVAILABLE) because the event "
        "loop was behind",
        value=f.refused,
    )


def alert_families(counts: Mapping[tuple[str, str], int]) -> Iterator[Metric]:
    alerts = GaugeMetricFamily(
        "cloudai_alerts", "Alerts by rule and state", labels=["rule", "state"]
    )
    for (rule, state), count in sorted(counts.items()):
        alerts.add_metric([rule, state], count)
    yield alerts


# -- reading the master's parts (on the event loop) -------------------------------------------


def read_ingest(
    service: ServiceCounts, telemetry: TelemetryManager, rate: RateMeter
) -> IngestFigures:
    stats = telemetry.stats
    return IngestFigures(
        accepted=service.heartbeats,
        not_registered=service.heartbeats_unknown,
        coalesced=stats.heartbeats_coalesced,
        processed=stats.heartbeats_processed,
        per_second=rate.rate,
        invalid_messages=service.invalid_messages,
        refused_credentials=service.refused_credentials,
        registrations=service.registrations,
        registrations_refused=service.registrations_refused,
        registrations_duplicate=service.refused_duplicates,
        streams_opened=service.streams_opened,
        streams_broken=service.streams_broken,
        results=service.results,
        results_not_stored=service.results_not_stored,
        master_stalls=stats.master_stalls,
        connectivity_events=stats.connectivity_events,
    )


def read_stream(hub: TelemetryHub) -> StreamFigures:
    stats, clients = hub.stats, hub.client_count
    return StreamFigures(
        clients=clients,
        clients_behind=hub.clients_behind(),
        frames_built=stats.frames_built,
        frames_sent=stats.frames_sent,
        direct_frames=stats.direct_sends,
        bytes_sent=stats.bytes_sent,
        send_errors=stats.send_errors,
        coalesced_updates=hub.coalesced(),
        tick_seconds=tick_interval(hub.batch_interval, clients, hub.max_frame_rate),
    )


def read_store(persistence: MasterPersistence) -> StoreFigures:
    commits, heartbeats = persistence.commits, persistence.heartbeats
    return StoreFigures(
        write_lag_seconds=commits.write_lag(),
        pending_task_writes=commits.pending,
        queued_registry_writes=persistence.queued_writes,
        pending_heartbeat_times=heartbeats.pending,
        transactions=commits.stats.transactions,
        operations=commits.stats.operations,
        failed_operations=commits.stats.failed_operations,
        registry_write_failures=persistence.failed_writes,
        heartbeat_flushes=heartbeats.flushed_batches,
        heartbeat_flush_failures=heartbeats.failed_batches,
    )


def read_cluster(telemetry: TelemetryManager, tasks: TaskBook) -> ClusterFigures:
    workers = telemetry.liveness_counts()
    workers.pop(LivenessState.REMOVED.value, None)  # always 0: removed workers are forgotten
    by_status = tasks.counts()
    return ClusterFigures(workers, {s.value: by_status.get(s, 0) for s in TaskStatus})


def read_history(stats: HistoryStats) -> HistoryFigures:
    return HistoryFigures(
        samples=stats.samples,
        dropped=stats.dropped,
        rows_written=stats.written,
        buckets_written=stats.buckets,
        failed_batches=stats.failed_batches,
        pruned=stats.pruned,
        writer_restarts=stats.writer_restarts,
    )


class HandoffCounts(Protocol):
    """``sync_ingest.HeartbeatHandoff``'s counters."""

    batches: int
    refused: int


def read_handoff(handoff: HandoffCounts) -> HandoffFigures:
    return HandoffFigures(batches=handoff.batches, refused=handoff.refused)


# -- the master's registry --------------------------------------------------------------------


class MasterMetrics:
    """A master's collectors, in its own ``CollectorRegistry``, and their exposition."""

    def __init__(
        self,
        collectors: Sequence[LiveCollector[Any]],
        *,
        workers: Callable[[], Sequence[WorkerTelemetry]] = list,
        loop_lag: LoopLagMonitor | None = None,
        process: bool = True,
    ) -> None:
        """``workers``: the published state of every known worker (read on the loop);
        ``collectors``: the master's own figures; ``process``: add prometheus_client's
        process, platform and GC collectors."""
        self.registry = CollectorRegistry(auto_describe=False)
        self.loop_lag = loop_lag
        self._workers = workers
        self._live: list[LiveCollector[Any]] = list(collectors)
        self._alerts: AlertCounts | None = None
        self._live.append(LiveCollector(self._read_alerts, self._alert_families))
        self.registry.register(LiveCollector(workers, worker_families))
        for collector in self._live:
            self.registry.register(collector)
        # The process's figures (CPU, memory, file descriptors, the garbage collector):
        # they read /proc and the interpreter, safe to collect in a thread as they are.
        self._steady: list[Collector] = []
        if process:
            registry = self.registry
            self._steady = [
                ProcessCollector(registry=registry),
                PlatformCollector(registry=registry),
                GCCollector(registry=registry),
            ]

    @classmethod
    def for_master(
        cls,
        *,
        service: ServiceCounts,
        telemetry: TelemetryManager,
        hub: TelemetryHub,
        tasks: TaskBook,
        persistence: MasterPersistence,
        ingest_rate: RateMeter,
        loop_lag: LoopLagMonitor | None = None,
    ) -> MasterMetrics:
        """The metrics of a master built of these parts (``server.build_master``)."""
        lag = loop_lag or LoopLagMonitor()
        collectors: list[LiveCollector[Any]] = [
            LiveCollector(lambda: read_ingest(service, telemetry, ingest_rate), ingest_families),
            LiveCollector(lambda: read_stream(hub), stream_families),
            LiveCollector(lambda: read_store(persistence), store_families),
            LiveCollector(lambda: read_cluster(telemetry, tasks), cluster_families),
            LiveCollector(lag.reading, loop_lag_families),
        ]
        return cls(collectors, workers=telemetry.latest_states, loop_lag=lag)

    # -- alerts (the alert engine, wired by the assembly) ---------------------------------

    def add(self, collector: LiveCollector[Any]) -> None:
        """Expose ``collector`` too, from the next scrape (a part made after the metrics:
        the history recorder, the synchronous gRPC server's hand-off)."""
        self._live.append(collector)
        self.registry.register(collector)

    def set_alert_source(self, counts: AlertCounts | None) -> None:
        """Expose ``cloudai_alerts{rule,state}`` from ``counts`` (None: not at all)."""
        self._alerts = counts

    def _read_alerts(self) -> Mapping[tuple[str, str], int] | None:
        return None if self._alerts is None else dict(self._alerts())

    @staticmethod
    def _alert_families(counts: Mapping[tuple[str, str], int] | None) -> Iterable[Metric]:
        return () if counts is None else alert_families(counts)

    # -- exposition -------------------------------------------------------------------------

    def stage(self) -> Scrape:
        """This moment's figures (call it on the event loop), safe to expose in any
        thread."""
        return Scrape(self._workers(), [*(c.staged() for c in self._live), *self._steady])

    def render(self) -> bytes:
        """The exposition now, in this thread (tests, benchmarks)."""
        return self.stage().render()

    async def exposition(self, compress: bool = False) -> bytes:
        """The exposition: figures read here, on the loop; the text made (and with
        ``compress``, gzipped) in a thread."""
        scrape = self.stage()
        if not compress:
            return await asyncio.to_thread(scrape.render)
        return await asyncio.to_thread(lambda: gzip.compress(scrape.render(), GZIP_LEVEL, mtime=0))


# -- HTTP -------------------------------------------------------------------------------------

METRICS_KEY = web.AppKey("metrics", MasterMetrics)


def add_routes(app: web.Application, metrics: MasterMetrics) -> None:
    """Serve ``GET /metrics`` on ``app`` (with tokens: a ``read`` token, as the API's
    reads; ``http_auth`` decides) and run the event-loop lag probe while it serves."""
    app[METRICS_KEY] = metrics
    app.router.add_get(METRICS_PATH, metrics_endpoint)
    if metrics.loop_lag is not None:
        app.cleanup_ctx.append(_run_loop_lag)


async def _run_loop_lag(app: web.Application) -> AsyncIterator[None]:
    monitor = app[METRICS_KEY].loop_lag
    assert monitor is not None
    monitor.start()
    yield
    await monitor.stop()


async def metrics_endpoint(request: web.Request) -> web.Response:
    """Prometheus text format 0.0.4, gzip-compressed when the scraper accepts it
    (Prometheus does)."""
    compress = accepts_gzip(request.headers.get("Accept-Encoding", ""))
    body = await request.app[METRICS_KEY].exposition(compress)
    headers = {"Content-Type": CONTENT_TYPE_PLAIN_0_0_4, "Vary": "Accept-Encoding"}
    if compress:
        headers["Content-Encoding"] = "gzip"
    return web.Response(body=body, headers=headers)


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` value allows gzip (listed, and not with q=0)."""
    for item in accept_encoding.split(","):
        coding, *params = (part.strip() for part in item.split(";"))
        if coding.lower() in ("gzip", "*"):
            return not any(
                p.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000") for p in params
            )
    return False
