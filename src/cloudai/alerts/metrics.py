"""The telemetry fields a threshold rule may watch, and how to read one from a
``WorkerTelemetry``. Pure.

Every numeric field of ``WorkerTelemetry`` (``cpu_usage``, ``memory_usage``,
``storage_usage``, ``gpu_usage``), ``running_tasks`` (how many), and every numeric field
of its richer ``resources`` when this master's telemetry has them
(``net_rx_bytes_per_sec``, ``load_avg_1m``, ...: None, so not judged, for a worker that
does not send them).
"""

from __future__ import annotations

import dataclasses
from operator import attrgetter
from typing import Any

from cloudai.alerts.engine import Getter
from cloudai.alerts.rules import RUNNING_TASKS
from cloudai.telemetry import model

_NUMERIC = {"float", "int", "float | None", "int | None"}


def _numeric_fields(cls: type) -> list[str]:
    if not dataclasses.is_dataclass(cls):
        return []
    return [
        f.name for f in dataclasses.fields(cls) if str(f.type) in _NUMERIC or f.type in (float, int)
    ]


WORKER_METRICS = frozenset(_numeric_fields(model.WorkerTelemetry)) - {"last_update"}
RESOURCE_METRICS = (
    frozenset(_numeric_fields(getattr(model, "ResourceTelemetry", object))) - WORKER_METRICS
)


def available_metrics() -> frozenset[str]:
    """Every metric name a rule may use on this master."""
    return WORKER_METRICS | RESOURCE_METRICS | {RUNNING_TASKS}


def telemetry_getter(metric: str) -> Getter:
    """Reads ``metric`` from a ``WorkerTelemetry`` (None: not reported)."""
    if metric == RUNNING_TASKS:
        return lambda sample: len(sample.running_tasks)
    if metric in RESOURCE_METRICS:

        def resource(sample: Any) -> Any:
            resources = sample.resources
            return None if resources is None else getattr(resources, metric)

        return resource
    return attrgetter(metric)
