"""Validation of incoming protocol messages. Pure functions, no I/O.

Limits (documented in docs/ARCHITECTURE.md):
- worker and task ids: 1..128 characters of ``[A-Za-z0-9._:@-]``, starting alphanumeric;
- usage percentages: finite and within 0..100;
- allocated/requested resources and machine totals: finite, >= 0 and within the
  bounds of one machine (MAX_CPUS, MAX_MEMORY_GIB, MAX_STORAGE_GIB, MAX_GPUS);
- running tasks per heartbeat: at most 1,024, ids unique;
- richer telemetry (extension fields, checked only when set): byte rates, load averages,
  bytes and GPU figures finite and >= 0 (a temperature may be below 0), within one
  machine's bounds, used never above total; at most 1,024 GPUs per heartbeat.
"""

from __future__ import annotations

import math

from cloudai import identifiers
from cloudai.identifiers import MAX_ID_LENGTH
from cloudai.proto import pb

__all__ = ["MAX_ID_LENGTH", "InvalidMessage", "check_id"]

MAX_RUNNING_TASKS = 1024
MAX_STATUS_LENGTH = 32
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class InvalidMessage(ValueError):
    """A message that breaks the protocol's rules; the text says which rule."""


def check_id(kind: str, value: str) -> str:
    try:
        return identifiers.check_id(kind, value)
    except identifiers.InvalidId as exc:
        raise InvalidMessage(str(exc)) from None


def check_percent(name: str, value: float) -> None:
    if not math.isfinite(value) or value < 0.0 or value > 100.0:
        raise InvalidMessage(f"{name} must be a percentage in 0..100, got {value!r}")


# Upper bounds of what one machine can have (far above today's largest), so that a
# buggy or hostile peer cannot put 1e308 GiB into totals, sums and dashboards.
MAX_CPUS = 100_000.0  # cores
MAX_MEMORY_GIB = 1_048_576.0  # 1 PiB
MAX_STORAGE_GIB = 1_073_741_824.0  # 1 EiB
MAX_GPUS = 10_000.0
MAX_TASK_CPU_PERCENT = MAX_CPUS * 100.0  # a task's measured CPU, percent of one core


def check_amount(name: str, value: float, limit: float = math.inf) -> None:
    if not math.isfinite(value) or value < 0.0:
        raise InvalidMessage(f"{name} must be a finite number >= 0, got {value!r}")
    if value > limit:
        raise InvalidMessage(f"{name} is {value:g}; the limit is {limit:g}")


# Bounds of the richer telemetry (extension fields 7-20 of Heartbeat, and GpuDevice).
MAX_BYTES_PER_SEC = 1e18  # network or disk, far above any machine's
MAX_LOAD_AVG = MAX_CPUS * 100.0  # runnable tasks, averaged
MAX_MEMORY_BYTES = int(MAX_MEMORY_GIB) << 30  # 1 PiB, also one GPU's memory
MAX_STORAGE_BYTES = int(MAX_STORAGE_GIB) << 30  # 1 EiB, also all GPUs' memory together
MAX_GPU_DEVICES = 1024
MAX_GPU_TEXT = 256  # a GPU's name or uuid, characters
MIN_TEMPERATURE_C = -273.15
MAX_TEMPERATURE_C = 1000.0
MAX_POWER_WATTS = 1_000_000.0

_RATE_FIELDS = (
    "net_rx_bytes_per_sec",
    "net_tx_bytes_per_sec",
    "disk_read_bytes_per_sec",
    "disk_write_bytes_per_sec",
)
_LOAD_FIELDS = ("load_avg_1m", "load_avg_5m", "load_avg_15m")
_BYTE_PAIRS = (
    ("memory_used_bytes", "memory_total_bytes", MAX_MEMORY_BYTES),
    ("storage_used_bytes", "storage_total_bytes", MAX_STORAGE_BYTES),
    ("gpu_memory_used_bytes", "gpu_memory_total_bytes", MAX_STORAGE_BYTES),
)
RESOURCE_FIELDS = (
    *_RATE_FIELDS,
    *_LOAD_FIELDS,
    *(name for pair in _BYTE_PAIRS for name in pair[:2]),
)
"""Heartbeat's optional (extension) scalar fields; ``gpus`` is the repeated one."""


def has_resources(hb: pb.Heartbeat) -> bool:
    """Whether ``hb`` carries any richer telemetry (a Go worker's never does)."""
    if hb.gpus:
        return True
    has = hb.HasField
    for name in RESOURCE_FIELDS:  # noqa: SIM110 - a loop is cheaper than any() here
        if has(name):
            return True
    return False


def _check_used_total(
    used_name: str, used: int | None, total_name: str, total: int | None, limit: int
) -> None:
    if total is not None:
        check_amount(total_name, total, limit)
    if used is not None:
        check_amount(used_name, used, limit)
        if total is not None and used > total:
            raise InvalidMessage(f"{used_name} ({used}) is above {total_name} ({total})")


def check_gpu_device(gpu: pb.GpuDevice) -> None:
    check_amount("gpus.index", gpu.index, MAX_GPUS)
    if len(gpu.name) > MAX_GPU_TEXT or len(gpu.uuid) > MAX_GPU_TEXT:
        raise InvalidMessage(f"a GPU's name or uuid is longer than {MAX_GPU_TEXT} characters")
    check_percent("gpus.utilization", gpu.utilization)
    _check_used_total(
        "gpus.memory_used_bytes",
        gpu.memory_used_bytes,
        "gpus.memory_total_bytes",
        gpu.memory_total_bytes,
        MAX_MEMORY_BYTES,
    )
    if gpu.HasField("temperature_c"):
        value = gpu.temperature_c
        if not (MIN_TEMPERATURE_C <= value <= MAX_TEMPERATURE_C):  # NaN fails too
            raise InvalidMessage(
                f"gpus.temperature_c must be within {MIN_TEMPERATURE_C:g}..{MAX_TEMPERATURE_C:g}"
                f", got {value!r}"
            )
    if gpu.HasField("power_watts"):
        check_amount("gpus.power_watts", gpu.power_watts, MAX_POWER_WATTS)


def validate_resources(hb: pb.Heartbeat) -> None:
    """The richer telemetry's rules, for the fields that are set."""
    has = hb.HasField
    for name in _RATE_FIELDS:
        if has(name):
            check_amount(name, getattr(hb, name), MAX_BYTES_PER_SEC)
    for name in _LOAD_FIELDS:
        if has(name):
            check_amount(name, getattr(hb, name), MAX_LOAD_AVG)
    for used_name, total_name, limit in _BYTE_PAIRS:
        _check_used_total(
            used_name,
            getattr(hb, used_name) if has(used_name) else None,
            total_name,
            getattr(hb, total_name) if has(total_name) else None,
            limit,
        )
    gpus = hb.gpus
    if len(gpus) > MAX_GPU_DEVICES:
        raise InvalidMessage(f"{len(gpus)} GPUs in one heartbeat; the limit is {MAX_GPU_DEVICES}")
    for gpu in gpus:
        check_gpu_device(gpu)


def validate_heartbeat(hb: pb.Heartbeat) -> None:
    check_id("worker_id", hb.worker_id)
    check_percent("cpu_usage", hb.cpu_usage)
    check_percent("memory_usage", hb.memory_usage)
    check_percent("storage_usage", hb.storage_usage)
    check_percent("gpu_usage", hb.gpu_usage)
    if has_resources(hb):
        validate_resources(hb)
    tasks = hb.running_tasks
    if len(tasks) > MAX_RUNNING_TASKS:
        raise InvalidMessage(
            f"{len(tasks)} running tasks in one heartbeat; the limit is {MAX_RUNNING_TASKS}"
        )
    seen: set[str] = set()
    for task in tasks:
        check_id("task_id", task.task_id)
        if task.task_id in seen:
            raise InvalidMessage(f"duplicate task_id {task.task_id!r} in running_tasks")
        seen.add(task.task_id)
        check_amount("cpu_allocated", task.cpu_allocated, MAX_CPUS)
        check_amount("memory_allocated", task.memory_allocated, MAX_MEMORY_GIB)
        check_amount("gpu_allocated", task.gpu_allocated, MAX_GPUS)
        check_amount("cpu_usage", task.cpu_usage, MAX_TASK_CPU_PERCENT)
        if len(task.status) > MAX_STATUS_LENGTH:
            raise InvalidMessage(f"task status is longer than {MAX_STATUS_LENGTH} characters")


def validate_worker_info(info: pb.WorkerInfo) -> None:
    check_id("worker_id", info.worker_id)
    if len(info.worker_ip) > 256:
        raise InvalidMessage("worker_ip is longer than 256 characters")
    check_amount("total_cpu", info.total_cpu, MAX_CPUS)
    check_amount("total_memory", info.total_memory, MAX_MEMORY_GIB)
    check_amount("total_storage", info.total_storage, MAX_STORAGE_GIB)
    check_amount("total_gpu", info.total_gpu, MAX_GPUS)


def validate_task_result(result: pb.TaskResult) -> None:
    check_id("task_id", result.task_id)
    check_id("worker_id", result.worker_id)
    if len(result.status) > MAX_STATUS_LENGTH:
        raise InvalidMessage(f"status is longer than {MAX_STATUS_LENGTH} characters")
