"""The per-worker metric families of ``GET /metrics``: one table of gauges, read from the
workers' published ``WorkerTelemetry``, turned into prometheus_client families
(``worker_families``) or, for a scrape, straight into the same text, faster
(``worker_text``). Pure: no I/O, nothing live; see master/metrics.py."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from cloudai.telemetry.model import WorkerTelemetry

WORKER_LABELS = ("worker_id",)


@dataclass(frozen=True, slots=True)
class WorkerGauge:
    """One per-worker gauge: its name, help text and the ``WorkerTelemetry`` attribute
    it reads."""

    name: str
    help: str
    attribute: str


USAGE_GAUGES: tuple[WorkerGauge, ...] = (
    WorkerGauge(
        "cloudai_worker_cpu_usage_percent", "CPU usage of the worker, percent", "cpu_usage"
    ),
    WorkerGauge(
        "cloudai_worker_memory_usage_percent", "Memory usage of the worker, percent", "memory_usage"
    ),
    WorkerGauge(
        "cloudai_worker_storage_usage_percent",
        "Storage usage of the worker, percent",
        "storage_usage",
    ),
    WorkerGauge(
        "cloudai_worker_gpu_usage_percent", "GPU usage of the worker, percent", "gpu_usage"
    ),
)
"""Exposed for every worker that is up."""

OPTIONAL_GAUGES: tuple[WorkerGauge, ...] = (
    WorkerGauge(
        "cloudai_worker_memory_used_bytes", "Memory in use on the worker", "memory_used_bytes"
    ),
    WorkerGauge("cloudai_worker_memory_total_bytes", "Memory of the worker", "memory_total_bytes"),
    WorkerGauge(
        "cloudai_worker_storage_used_bytes", "Storage in use on the worker", "storage_used_bytes"
    ),
    WorkerGauge(
        "cloudai_worker_storage_total_bytes", "Storage of the worker", "storage_total_bytes"
    ),
    WorkerGauge(
        "cloudai_worker_gpu_memory_used_bytes",
        "GPU memory in use on the worker, all devices together",
        "gpu_memory_used_bytes",
    ),
    WorkerGauge(
        "cloudai_worker_gpu_memory_total_bytes",
        "GPU memory of the worker, all devices together",
        "gpu_memory_total_bytes",
    ),
    WorkerGauge(
        "cloudai_worker_network_receive_bytes_per_second",
        "Bytes per second the worker receives over the network",
        "net_rx_bytes_per_sec",
    ),
    WorkerGauge(
        "cloudai_worker_network_transmit_bytes_per_second",
        "Bytes per second the worker sends over the network",
        "net_tx_bytes_per_sec",
    ),
    WorkerGauge(
        "cloudai_worker_disk_read_bytes_per_second",
        "Bytes per second the worker reads from its disks",
        "disk_read_bytes_per_sec",
    ),
    WorkerGauge(
        "cloudai_worker_disk_write_bytes_per_second",
        "Bytes per second the worker writes to its disks",
        "disk_write_bytes_per_sec",
    ),
    WorkerGauge("cloudai_worker_load1", "Load average of the worker over 1 minute", "load_avg_1m"),
    WorkerGauge("cloudai_worker_load5", "Load average of the worker over 5 minutes", "load_avg_5m"),
    WorkerGauge(
        "cloudai_worker_load15", "Load average of the worker over 15 minutes", "load_avg_15m"
    ),
)
"""The extension point for richer telemetry: read from ``WorkerTelemetry.resources``; a
worker's gauge is exposed when the attribute is there and not None (a worker that cannot
measure it sends nothing; a Go worker sends none). Add a line here for a new field; a
family nobody reports is left out."""

GPU_LABELS = ("worker_id", "gpu")
GPU_GAUGES: tuple[WorkerGauge, ...] = (
    WorkerGauge(
        "cloudai_worker_gpu_device_utilization_percent",
        "Utilization of one GPU of the worker, percent",
        "utilization",
    ),
    WorkerGauge(
        "cloudai_worker_gpu_device_memory_used_bytes",
        "Memory in use on one GPU of the worker",
        "memory_used_bytes",
    ),
    WorkerGauge(
        "cloudai_worker_gpu_device_memory_total_bytes",
        "Memory of one GPU of the worker",
        "memory_total_bytes",
    ),
    WorkerGauge(
        "cloudai_worker_gpu_device_temperature_celsius",
        "Temperature of one GPU of the worker",
        "temperature_c",
    ),
    WorkerGauge(
        "cloudai_worker_gpu_device_power_watts",
        "Power drawn by one GPU of the worker",
        "power_watts",
    ),
)
"""Per GPU device (``resources.gpus``), labelled by the device's index (``gpu``)."""


UP = WorkerGauge(
    "cloudai_worker_up",
    "1 if the worker is alive (registered, active or suspect), 0 if not "
    "(inactive, or not seen since the master started)",
    "is_active",
)
LAST_HEARTBEAT = WorkerGauge(
    "cloudai_worker_last_heartbeat_timestamp_seconds",
    "Unix time of the worker's last heartbeat",
    "last_update",
)
RUNNING_TASKS = WorkerGauge(
    "cloudai_worker_running_tasks", "Tasks the worker reports running", "running_tasks"
)


def worker_families(
    states: Sequence[WorkerTelemetry],
    optional: Sequence[WorkerGauge] = OPTIONAL_GAUGES,
) -> Iterator[Metric]:
    """The per-worker gauges of ``states`` (one published state per known worker).

    Every worker: ``cloudai_worker_up`` and, once it has reported, the time of its last
    heartbeat. A worker that is up (registered, active or suspect) also gets its usage,
    its running tasks, whichever ``optional`` gauges its richer telemetry carries and its
    GPU devices' figures; one that is not (inactive, or not seen since the master
    started) has no fresh figures, so none are shown. ``worker_text`` writes the same
    families' text faster."""
    labels = WORKER_LABELS
    up, last, running = (
        GaugeMetricFamily(g.name, g.help, labels=labels)
        for g in (UP, LAST_HEARTBEAT, RUNNING_TASKS)
    )
    usage = [(GaugeMetricFamily(g.name, g.help, labels=labels), g.attribute) for g in USAGE_GAUGES]
    extra = [(GaugeMetricFamily(g.name, g.help, labels=labels), g.attribute) for g in optional]
    devices = [
        (GaugeMetricFamily(g.name, g.help, labels=GPU_LABELS), g.attribute) for g in GPU_GAUGES
    ]
    for state in states:
        key = [state.worker_id]
        alive = state.is_active
        up.add_metric(key, 1.0 if alive else 0.0)
        if state.last_update:
            last.add_metric(key, state.last_update)
        if not alive:
            continue
        running.add_metric(key, len(state.running_tasks))
        for family, attribute in usage:
            family.add_metric(key, getattr(state, attribute))
        resources = state.resources
        if resources is None:
            continue
        for family, attribute in extra:
            value = getattr(resources, attribute, None)
            if value is not None:
                family.add_metric(key, float(value))
        for gpu in resources.gpus:
            device = [state.worker_id, str(gpu.index)]
            for family, attribute in devices:
                value = getattr(gpu, attribute, None)
                if value is not None:
                    family.add_metric(device, float(value))
    yield up
    yield last
    yield running
    for family, _ in usage:
        yield family
    for family, _ in (*extra, *devices):
        if family.samples:
            yield family


def worker_text(
    states: Sequence[WorkerTelemetry],
    optional: Sequence[WorkerGauge] = OPTIONAL_GAUGES,
) -> str:
    """``generate_latest`` of ``worker_families(states, optional)``, character for
    character (a unit test holds them equal), written about ten times faster.

    At 10,000 workers the per-worker families are nearly every line of a scrape (26 a
    worker with the richer telemetry and two GPUs): prometheus_client's generic writer
    (label-name checks and escaping for every sample) takes several seconds for them,
    this one a fraction of a second. Values go through prometheus_client's own
    ``floatToGoString``; label values are escaped as it escapes them."""
    # One string per family (joined from its lines), then one join of those: no single
    # C call over all 260,000 lines holds the GIL for long (the loop runs meanwhile).
    out: list[str] = []
    keyed = [(state, _worker_key(state.worker_id)) for state in states]
    live = [(state, key) for state, key in keyed if state.is_active]
    fmt = floatToGoString

    def family(gauge: WorkerGauge, lines: list[str], always: bool = True) -> None:
        if lines or always:
            out.append(_header(gauge))
            out.append("".join(lines))

    family(UP, [f"{UP.name}{key} {'1.0' if s.is_active else '0.0'}\n" for s, key in keyed])
    name = LAST_HEARTBEAT.name
    family(
        LAST_HEARTBEAT,
        [f"{name}{key} {fmt(s.last_update)}\n" for s, key in keyed if s.last_update],
    )
    name = RUNNING_TASKS.name
    family(RUNNING_TASKS, [f"{name}{key} {fmt(len(s.running_tasks))}\n" for s, key in live])
    for gauge in USAGE_GAUGES:
        name, attribute = gauge.name, gauge.attribute
        family(gauge, [f"{name}{key} {fmt(getattr(s, attribute))}\n" for s, key in live])
    rich = [(state.resources, key) for state, key in live if state.resources is not None]
    for gauge in optional:
        name, attribute = gauge.name, gauge.attribute
        lines = [
            f"{name}{key} {fmt(value)}\n"
            for resources, key in rich
            if (value := getattr(resources, attribute, None)) is not None
        ]
        family(gauge, lines, always=False)
    devices = [
        (gpu, _device_key(state.worker_id, gpu.index))
        for state, _ in live
        if state.resources is not None
        for gpu in state.resources.gpus
    ]
    for gauge in GPU_GAUGES:
        name, attribute = gauge.name, gauge.attribute
        lines = [
            f"{name}{key} {fmt(value)}\n"
            for gpu, key in devices
            if (value := getattr(gpu, attribute, None)) is not None
        ]
        family(gauge, lines, always=False)
    return "".join(out)


def _header(gauge: WorkerGauge) -> str:
    text = gauge.help.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {gauge.name} {text}\n# TYPE {gauge.name} gauge\n"


def _label_value(text: str) -> str:
    """A label value as the text format needs it (and prometheus_client writes it)."""
    if "\\" in text or "\n" in text or '"' in text:
        return text.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return text  # a worker id as validation allows it: nothing to escape


def _worker_key(worker_id: str) -> str:
    return f'{{worker_id="{_label_value(worker_id)}"}}'


def _device_key(worker_id: str, index: int) -> str:
    return f'{{gpu="{index}",worker_id="{_label_value(worker_id)}"}}'
