"""Worker telemetry: the data model, the TelemetryManager and JSON encoding."""

from cloudai.telemetry.manager import TelemetryManager
from cloudai.telemetry.model import TaskTelemetry, WorkerTelemetry

__all__ = ["TaskTelemetry", "TelemetryManager", "WorkerTelemetry"]
