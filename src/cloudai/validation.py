"""Validation of incoming protocol messages. Pure functions, no I/O.

Limits (documented in docs/ARCHITECTURE.md):
- worker and task ids: 1..128 characters of ``[A-Za-z0-9._:@-]``, starting alphanumeric;
- usage percentages: finite and within 0..100;
- allocated/requested resources and machine totals: finite, >= 0 and within the
  bounds of one machine (MAX_CPUS, MAX_MEMORY_GIB, MAX_STORAGE_GIB, MAX_GPUS);
- running tasks per heartbeat: at most 1,024, ids unique.
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


def validate_heartbeat(hb: pb.Heartbeat) -> None:
    check_id("worker_id", hb.worker_id)
    check_percent("cpu_usage", hb.cpu_usage)
    check_percent("memory_usage", hb.memory_usage)
    check_percent("storage_usage", hb.storage_usage)
    check_percent("gpu_usage", hb.gpu_usage)
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
