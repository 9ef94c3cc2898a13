"""The master's Prometheus collectors against recorded figures: each family function
turns plain data into metric families, rendered with prometheus_client's own
``generate_latest`` and read back with its parser. No sockets: the HTTP side is in
tests/integration/test_prometheus_scrape.py."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from cloudai.history.recorder import HistoryStats
from cloudai.master import metrics, worker_metrics
from cloudai.master.http_auth import Verdict, decide, required_scope
from cloudai.master.loop_lag import LagHistogram, LoopLagMonitor
from cloudai.master.metrics import (
    ClusterFigures,
    HandoffFigures,
    HistoryFigures,
    IngestFigures,
    LiveCollector,
    MasterMetrics,
    Recorded,
    StoreFigures,
    StreamFigures,
)
from cloudai.master.persistence import MasterPersistence
from cloudai.master.rate_meter import RateMeter
from cloudai.master.registry import WorkerRegistry
from cloudai.master.service import ServiceStats
from cloudai.master.tasks import TaskBook
from cloudai.master.ws_hub import TelemetryHub
from cloudai.proto import pb
from cloudai.security.tokens import Scope
from cloudai.store import GroupCommit, Store, open_store
from cloudai.telemetry.manager import TelemetryManager
from cloudai.telemetry.model import GpuTelemetry, ResourceTelemetry, TaskTelemetry, WorkerTelemetry

Families = dict[str, Any]  # name -> prometheus_client Metric, as parsed


def render(figures: Any, families: Callable[[Any], Iterable[Metric]]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Recorded(figures, families))
    return generate_latest(registry)


def parse(text: bytes) -> Families:
    return {family.name: family for family in text_string_to_metric_families(text.decode())}


def samples(family: Any) -> dict[tuple[tuple[str, str], ...], float]:
    """(sorted labels) -> value of every sample of ``family`` (suffixed ones included)."""
    return {
        (sample.name, *sorted(sample.labels.items())): sample.value for sample in family.samples
    }


def value(families: Families, name: str, **labels: str) -> float:
    """The value of the sample ``name`` (a family name, or a sample's own name such as
    ``x_total``) with exactly ``labels``."""
    for family in families.values():
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    raise KeyError(f"no sample {name}{labels}")


def has_sample(families: Families, name: str, **labels: str) -> bool:
    try:
        value(families, name, **labels)
    except KeyError:
        return False
    return True


# -- recorded data ----------------------------------------------------------------------------


def rich_worker() -> WorkerTelemetry:
    resources = ResourceTelemetry(
        net_rx_bytes_per_sec=1000.0,
        memory_used_bytes=2 * 1024**3,
        memory_total_bytes=8 * 1024**3,
        load_avg_1m=0.5,
        gpus=(
            GpuTelemetry(0, "A100", "GPU-0", 40.0, 1024, 4096, temperature_c=51.0),
            GpuTelemetry(1, "A100", "GPU-1", 60.0, 2048, 4096),
        ),
    )
    return WorkerTelemetry(
        "w-rich",
        cpu_usage=12.5,
        memory_usage=25.0,
        storage_usage=50.0,
        gpu_usage=50.0,
        running_tasks=[TaskTelemetry("t1"), TaskTelemetry("t2")],
        last_update=1_700_000_000.0,
        is_active=True,
        state="active",
        resources=resources,
    )


RECORDED_WORKERS = [
    rich_worker(),
    # A Go worker: the original telemetry only.
    WorkerTelemetry("w-plain", 1.0, 2.0, 3.0, 0.0, [], 1_700_000_001.0, True, "suspect"),
    WorkerTelemetry("w-gone", 90.0, 90.0, 90.0, 0.0, [], 1_699_999_000.0, False, "inactive"),
    WorkerTelemetry("w-unknown", last_update=0.0, is_active=False, state="unknown"),
]


def test_worker_up_and_usage_for_live_workers_only() -> None:
    families = parse(render(RECORDED_WORKERS, worker_metrics.worker_families))
    up = samples(families["cloudai_worker_up"])
    assert up == {
        ("cloudai_worker_up", ("worker_id", "w-rich")): 1.0,
        ("cloudai_worker_up", ("worker_id", "w-plain")): 1.0,
        ("cloudai_worker_up", ("worker_id", "w-gone")): 0.0,
        ("cloudai_worker_up", ("worker_id", "w-unknown")): 0.0,
    }
    assert value(families, "cloudai_worker_cpu_usage_percent", worker_id="w-rich") == 12.5
    assert value(families, "cloudai_worker_memory_usage_percent", worker_id="w-rich") == 25.0
    assert value(families, "cloudai_worker_storage_usage_percent", worker_id="w-rich") == 50.0
    assert value(families, "cloudai_worker_gpu_usage_percent", worker_id="w-rich") == 50.0
    assert value(families, "cloudai_worker_running_tasks", worker_id="w-rich") == 2.0
    assert value(families, "cloudai_worker_running_tasks", worker_id="w-plain") == 0.0
    # An inactive worker has no fresh figures: only up 0 and its last heartbeat time.
    assert not has_sample(families, "cloudai_worker_cpu_usage_percent", worker_id="w-gone")
    last = "cloudai_worker_last_heartbeat_timestamp_seconds"
    assert value(families, last, worker_id="w-gone") == 1_699_999_000.0
    assert not has_sample(families, last, worker_id="w-unknown")  # never reported


def test_richer_telemetry_when_present_and_gpu_devices_labelled() -> None:
    families = parse(render(RECORDED_WORKERS, worker_metrics.worker_families))
    rich = {"worker_id": "w-rich"}
    assert value(families, "cloudai_worker_memory_used_bytes", **rich) == 2 * 1024**3
    assert value(families, "cloudai_worker_memory_total_bytes", **rich) == 8 * 1024**3
    assert value(families, "cloudai_worker_network_receive_bytes_per_second", **rich) == 1000.0
    assert value(families, "cloudai_worker_load1", **rich) == 0.5
    # Not sent: not shown (no zeros invented), for this worker or the Go one.
    assert not has_sample(families, "cloudai_worker_load5", **rich)
    assert "cloudai_worker_storage_used_bytes" not in families  # nobody reports it
    assert not has_sample(families, "cloudai_worker_memory_used_bytes", worker_id="w-plain")
    util = "cloudai_worker_gpu_device_utilization_percent"
    assert value(families, util, worker_id="w-rich", gpu="0") == 40.0
    assert value(families, util, worker_id="w-rich", gpu="1") == 60.0
    temperature = "cloudai_worker_gpu_device_temperature_celsius"
    assert value(families, temperature, worker_id="w-rich", gpu="0") == 51.0
    assert not has_sample(families, temperature, worker_id="w-rich", gpu="1")


def test_worker_labels_are_bounded_to_known_workers() -> None:
    """One series per family per known worker, the worker id a label, never a name."""
    families = parse(render(RECORDED_WORKERS, worker_metrics.worker_families))
    known = {w.worker_id for w in RECORDED_WORKERS}
    for name, family in families.items():
        assert not any(w in name for w in known)
        for sample in family.samples:
            assert sample.labels["worker_id"] in known
            assert set(sample.labels) <= {"worker_id", "gpu"}
    assert len(families["cloudai_worker_up"].samples) == len(RECORDED_WORKERS)


def test_no_workers_still_describes_the_core_families() -> None:
    families = parse(render([], worker_metrics.worker_families))
    assert families["cloudai_worker_up"].samples == []
    assert "cloudai_worker_memory_used_bytes" not in families


INGEST = IngestFigures(
    accepted=100,
    not_registered=3,
    coalesced=7,
    processed=93,
    per_second=12.5,
    invalid_messages=2,
    refused_credentials=1,
    registrations=4,
    registrations_refused=1,
    registrations_duplicate=2,
    streams_opened=5,
    streams_broken=1,
    results=9,
    results_not_stored=0,
    master_stalls=1,
    connectivity_events=0,
)
STREAM = StreamFigures(
    clients=3,
    clients_behind=1,
    frames_built=50,
    frames_sent=140,
    direct_frames=120,
    bytes_sent=65_536,
    send_errors=1,
    coalesced_updates=17,
    tick_seconds=0.005,
)
STORE = StoreFigures(
    write_lag_seconds=0.25,
    pending_task_writes=4,
    queued_registry_writes=2,
    pending_heartbeat_times=1000,
    transactions=10,
    operations=30,
    failed_operations=1,
    registry_write_failures=2,
    heartbeat_flushes=6,
    heartbeat_flush_failures=1,
)


def test_ingest_counters() -> None:
    families = parse(render(INGEST, metrics.ingest_families))
    assert families["cloudai_heartbeats_accepted"].type == "counter"
    assert value(families, "cloudai_heartbeats_accepted_total") == 100
    assert value(families, "cloudai_heartbeats_refused_total", reason="not_registered") == 3
    assert value(families, "cloudai_heartbeats_coalesced_total") == 7
    assert value(families, "cloudai_heartbeats_per_second") == 12.5
    assert value(families, "cloudai_registrations_refused_total", reason="duplicate") == 2
    assert value(families, "cloudai_master_stalls_total") == 1


def test_stream_figures() -> None:
    families = parse(render(STREAM, metrics.stream_families))
    assert value(families, "cloudai_stream_clients") == 3
    assert value(families, "cloudai_stream_clients_behind") == 1
    assert value(families, "cloudai_stream_frames_sent_total") == 140
    assert value(families, "cloudai_stream_sent_bytes_total") == 65_536
    assert value(families, "cloudai_stream_coalesced_updates_total") == 17
    assert value(families, "cloudai_stream_tick_seconds") == 0.005


def test_store_figures() -> None:
    families = parse(render(STORE, metrics.store_families))
    assert value(families, "cloudai_store_write_lag_seconds") == 0.25
    assert value(families, "cloudai_store_pending_writes", writer="tasks") == 4
    assert value(families, "cloudai_store_pending_writes", writer="heartbeat_times") == 1000
    assert value(families, "cloudai_store_write_failures_total", writer="registry") == 2
    assert value(families, "cloudai_store_transactions_total") == 10


def test_cluster_counts_by_state() -> None:
    figures = ClusterFigures({"active": 2, "inactive": 1}, {"queued": 1, "running": 0})
    families = parse(render(figures, metrics.cluster_families))
    assert value(families, "cloudai_workers", state="active") == 2
    assert value(families, "cloudai_tasks", status="queued") == 1
    assert value(families, "cloudai_tasks", status="running") == 0


def test_loop_lag_histogram() -> None:
    histogram = LagHistogram((0.01, 0.1))
    for lag in (0.001, 0.05, 0.05, 3.0, -1.0):  # a negative lag (clock skew) counts as 0
        histogram.observe(lag)
    families = parse(render(histogram.reading(), metrics.loop_lag_families))
    lag = "cloudai_event_loop_lag_seconds"
    assert families[lag].type == "histogram"
    assert value(families, lag + "_bucket", le="0.01") == 2
    assert value(families, lag + "_bucket", le="0.1") == 4
    assert value(families, lag + "_bucket", le="+Inf") == 5
    assert value(families, lag + "_count") == 5
    assert value(families, lag + "_sum") == pytest.approx(3.101)
    assert value(families, "cloudai_event_loop_lag_latest_seconds") == 0.0
    with pytest.raises(ValueError):
        LagHistogram((0.1, 0.01))


async def test_loop_lag_monitor_probes_until_stopped() -> None:
    monitor = LoopLagMonitor(interval=0.001)
    monitor.start()
    try:
        for _ in range(2000):
            if monitor.reading().count >= 3:
                break
            await asyncio.sleep(0.001)
        assert monitor.reading().count >= 3
        assert monitor.running
    finally:
        await monitor.stop()
    assert not monitor.running
    count = monitor.reading().count
    await asyncio.sleep(0.01)
    assert monitor.reading().count == count


HISTORY = HistoryFigures(
    samples=500, dropped=4, rows_written=490, buckets_written=12, failed_batches=1, pruned=30
)


def test_history_figures() -> None:
    families = parse(render(HISTORY, metrics.history_families))
    assert value(families, "cloudai_history_samples_total") == 500
    assert value(families, "cloudai_history_samples_dropped_total") == 4
    assert value(families, "cloudai_history_rows_written_total", tier="raw") == 490
    assert value(families, "cloudai_history_rows_written_total", tier="aggregate") == 12
    assert value(families, "cloudai_history_write_failures_total") == 1
    assert value(families, "cloudai_history_rows_pruned_total") == 30


def test_read_history_and_handoff_copy_the_counters() -> None:
    stats = HistoryStats(samples=5, dropped=1, written=4, buckets=2, failed_batches=0, pruned=3)
    figures = metrics.read_history(stats)
    stats.samples += 1  # later changes do not reach figures already read
    assert figures == HistoryFigures(5, 1, 4, 2, 0, 3)
    handoff = SimpleNamespace(batches=7, refused=2)
    assert metrics.read_handoff(handoff) == HandoffFigures(batches=7, refused=2)


def test_sync_handoff_figures_only_once_added() -> None:
    master = MasterMetrics([], process=False)
    assert b"cloudai_grpc_sync" not in master.render()
    master.add(
        LiveCollector(lambda: HandoffFigures(batches=9, refused=2), metrics.handoff_families)
    )
    families = parse(master.render())
    assert value(families, "cloudai_grpc_sync_batches_total") == 9
    assert value(families, "cloudai_grpc_sync_refused_total") == 2


def test_alerts_only_when_a_source_is_wired() -> None:
    master = MasterMetrics([], process=False)
    assert b"cloudai_alerts" not in master.render()
    master.set_alert_source(lambda: {("worker_down", "firing"): 2, ("disk_full", "pending"): 1})
    families = parse(master.render())
    assert value(families, "cloudai_alerts", rule="worker_down", state="firing") == 2
    assert value(families, "cloudai_alerts", rule="disk_full", state="pending") == 1
    master.set_alert_source(None)
    assert b"cloudai_alerts" not in master.render()


# -- the fast writer of the per-worker block --------------------------------------------------

ODD_WORKERS = [
    WorkerTelemetry('w"quoted\\back\nline', 1e-9, float("nan"), float("inf"), 100.0, [], 0.5, True),
    WorkerTelemetry(
        "w-big",
        0.0,
        99.99,
        1234567.0,
        0.0,
        [],
        1_700_000_000.123,
        True,
        "active",
        ResourceTelemetry(storage_total_bytes=2**63, gpus=(GpuTelemetry(7, "x", "u", 0, 0, 0),)),
    ),
]


@pytest.mark.parametrize(
    "states",
    [RECORDED_WORKERS, ODD_WORKERS, [], RECORDED_WORKERS[1:3]],
    ids=["recorded", "odd", "none", "some"],
)
def test_worker_text_is_prometheus_clients_text(states: list[WorkerTelemetry]) -> None:
    """The fast writer gives generate_latest's text of worker_families, to the byte."""
    expected = generate_latest(Recorded(states, worker_metrics.worker_families)).decode()
    assert worker_metrics.worker_text(states) == expected


def test_the_scrape_renders_as_generate_latest_does() -> None:
    scrape = recorded_master(process=False).stage()
    assert scrape.render() == generate_latest(scrape)


# -- the whole exposition ---------------------------------------------------------------------


def recorded_master(process: bool = True) -> MasterMetrics:
    histogram = LagHistogram()
    histogram.observe(0.002)
    master = MasterMetrics(
        [
            LiveCollector(lambda: INGEST, metrics.ingest_families),
            LiveCollector(lambda: STREAM, metrics.stream_families),
            LiveCollector(lambda: STORE, metrics.store_families),
            LiveCollector(
                lambda: ClusterFigures({"active": 2}, {"queued": 1}), metrics.cluster_families
            ),
            LiveCollector(histogram.reading, metrics.loop_lag_families),
        ],
        workers=lambda: RECORDED_WORKERS,
        process=process,
    )
    master.set_alert_source(lambda: {("worker_down", "firing"): 1})
    master.add(LiveCollector(lambda: HISTORY, metrics.history_families))
    master.add(LiveCollector(lambda: HandoffFigures(3, 1), metrics.handoff_families))
    return master


def test_names_follow_the_conventions() -> None:
    """cloudai_ prefix (the process's own figures aside), a HELP text on every family,
    _total on every counter, units in the names of what has one."""
    text = recorded_master().render()
    families = parse(text)
    ours = [f for f in families.values() if not f.name.startswith(("process_", "python_"))]
    assert len(ours) > 40
    for family in ours:
        assert family.name.startswith("cloudai_"), family.name
        assert family.documentation, family.name
        if family.type == "counter":
            assert all(s.name.endswith("_total") for s in family.samples), family.name
    assert b"process_resident_memory_bytes" in text  # the process collector, ours only
    assert b"python_gc_collections_total" in text


def test_the_registry_is_private() -> None:
    from prometheus_client import REGISTRY

    master = recorded_master()
    assert master.registry is not REGISTRY
    assert b"cloudai_" not in generate_latest(REGISTRY)
    # The registry itself serves the same families (read and rendered in one thread).
    assert parse(generate_latest(master.registry)).keys() == parse(master.render()).keys()


def test_promtool_accepts_the_exposition(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing (the prometheus package): .ci/run installs it")
        pytest.skip("promtool is not installed (Debian package prometheus)")
    done = subprocess.run(
        [promtool, "check", "metrics"],
        input=recorded_master().render(),
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, (done.stdout, done.stderr)


# -- reading happens at scrape time only ------------------------------------------------------


def test_collectors_read_only_when_scraped() -> None:
    reads: list[int] = []

    def read() -> list[WorkerTelemetry]:
        reads.append(1)
        return RECORDED_WORKERS

    master = MasterMetrics([], workers=read, process=False)
    assert reads == []
    staged = master.stage()  # the read, on the caller's thread
    assert reads == [1]
    result: list[bytes] = []
    thread = threading.Thread(target=lambda: result.append(staged.render()))
    thread.start()
    thread.join(10)
    assert reads == [1]  # the thread renders what was read; it reads nothing live
    assert b'cloudai_worker_up{worker_id="w-rich"} 1.0' in result[0]


class NoSubscriptions(TelemetryManager):
    def subscribe(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("metrics must not subscribe to telemetry (no per-heartbeat cost)")


def heartbeat(worker_id: str, cpu: float) -> pb.Heartbeat:
    return pb.Heartbeat(worker_id=worker_id, cpu_usage=cpu, memory_usage=10.0)


async def test_for_master_reads_the_real_parts(tmp_path: Path) -> None:
    telemetry = NoSubscriptions(30.0)
    registry = WorkerRegistry()
    tasks = TaskBook(registry, link=None)  # type: ignore[arg-type]
    store: Store = open_store(None, tmp_path)
    persistence = MasterPersistence(store, heartbeat_flush_interval=5.0)
    stats = ServiceStats(heartbeats=2, heartbeats_unknown=1)
    hub = TelemetryHub()
    master = MasterMetrics.for_master(
        service=stats,
        telemetry=telemetry,
        hub=hub,
        tasks=tasks,
        persistence=persistence,
        ingest_rate=RateMeter(),
    )
    try:
        telemetry.register_worker("w1")
        telemetry.process_heartbeat(heartbeat("w1", 42.0))  # not started: applied inline
        telemetry.add_known(["w-old"])
        families = parse(await master.exposition())
        assert value(families, "cloudai_worker_up", worker_id="w1") == 1
        assert value(families, "cloudai_worker_cpu_usage_percent", worker_id="w1") == 42.0
        assert value(families, "cloudai_worker_up", worker_id="w-old") == 0
        assert value(families, "cloudai_heartbeats_accepted_total") == 2
        assert value(families, "cloudai_heartbeats_refused_total", reason="not_registered") == 1
        assert value(families, "cloudai_workers", state="active") == 1
        assert value(families, "cloudai_workers", state="unknown") == 1
        assert not has_sample(families, "cloudai_workers", state="removed")
        assert value(families, "cloudai_tasks", status="queued") == 0
        assert value(families, "cloudai_store_write_lag_seconds") == 0
        assert value(families, "cloudai_stream_clients") == 0
        assert families["cloudai_event_loop_lag_seconds"].type == "histogram"
        telemetry.unregister_worker("w1")
        families = parse(master.render())
        assert not has_sample(families, "cloudai_worker_up", worker_id="w1")  # gone
    finally:
        store.close()


# -- the store's write lag --------------------------------------------------------------------


class BlockingStore:
    """A store whose transactions wait until released (a slow database)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()

    def apply(self, operations: list[Any]) -> list[Any]:
        self.entered.set()
        self.release.wait(10)
        return [None for _ in operations]


async def test_group_commit_write_lag() -> None:
    store = BlockingStore()
    commits = GroupCommit(store)  # type: ignore[arg-type]
    assert commits.write_lag() == 0.0
    commits.start()
    try:
        pending = asyncio.ensure_future(commits.commit(lambda s: None, "slow"))
        await asyncio.to_thread(store.entered.wait, 10)
        # Seen from 5 s later, the write being committed has waited at least 5 s.
        assert commits.write_lag(now=time.monotonic() + 5.0) >= 5.0
        assert commits.write_lag() >= 0.0
        store.release.set()
        await pending
        assert commits.write_lag() == 0.0
    finally:
        store.release.set()
        await commits.stop()


# -- who may scrape ---------------------------------------------------------------------------


def test_metrics_need_a_read_token_and_health_stays_open() -> None:
    assert required_scope("GET", "/metrics") is Scope.READ
    assert required_scope("HEAD", "/metrics") is Scope.READ
    assert required_scope("POST", "/metrics") is Scope.ADMIN
    assert decide("GET", "/metrics", None) is Verdict.UNAUTHENTICATED
    assert decide("GET", "/metrics", Scope.READ) is Verdict.ALLOWED
    assert decide("GET", "/health", None) is Verdict.ALLOWED


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("gzip", True),
        ("identity, gzip;q=0.5", True),
        ("GZIP", True),
        ("*", True),
        ("", False),
        ("deflate, br", False),
        ("gzip;q=0", False),
        ("gzip; q=0.0", False),
    ],
)
def test_accepts_gzip(header: str, expected: bool) -> None:
    assert metrics.accepts_gzip(header) is expected
