"""Ways of running a task behind one interface (base.Runtime / base.TaskHandle)."""

from cloudai.worker.runtimes.base import (
    Runtime,
    RuntimeStartError,
    TaskHandle,
    TaskOutcome,
    TaskSpec,
    TaskUsage,
)
from cloudai.worker.runtimes.docker import DockerRuntime
from cloudai.worker.runtimes.process import ProcessRuntime

__all__ = [
    "DockerRuntime",
    "ProcessRuntime",
    "Runtime",
    "RuntimeStartError",
    "TaskHandle",
    "TaskOutcome",
    "TaskSpec",
    "TaskUsage",
]
