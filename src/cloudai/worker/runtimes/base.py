"""The runtime interface: what the TaskManager needs from a way of running a task."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudai.proto import pb


@dataclass(frozen=True, slots=True)
class TaskSpec:
    task_id: str
    command: str = ""
    docker_image: str = ""
    req_cpu: float = 0.0  # cores
    req_memory: float = 0.0  # GB (2^30 bytes)
    req_storage: float = 0.0  # GB
    req_gpu: float = 0.0  # GPUs
    time_limit: float = 0.0  # seconds; 0: no limit
    attempt: int = 0  # 1 for the first run; 0 from a master that does not retry

    @classmethod
    def from_proto(cls, task: pb.Task) -> TaskSpec:
        return cls(
            task_id=task.task_id,
            command=task.command,
            docker_image=task.docker_image,
            req_cpu=task.req_cpu,
            req_memory=task.req_memory,
            req_storage=task.req_storage,
            req_gpu=task.req_gpu,
            time_limit=task.time_limit_seconds,
            attempt=task.attempt,
        )


@dataclass(frozen=True, slots=True)
class TaskUsage:
    cpu_percent: float = 0.0  # percent of one core; may exceed 100 on several cores
    memory_bytes: int = 0  # resident bytes


@dataclass(frozen=True, slots=True)
class TaskOutcome:
    exit_code: int  # 128+N when killed by signal N (shell convention)
    log_tail: bytes  # the last max-log-bytes of stdout+stderr
    dropped_bytes: int = 0  # output dropped before the tail (0: complete)
    detail: str = ""  # e.g. "killed by signal SIGTERM"
    reason: str = ""  # why it failed, when known: "out of memory" (TaskResult.reason)


class RuntimeStartError(RuntimeError):
    """The task could not be started (image pull failed, no shell, ...)."""


class TaskHandle(ABC):
    """One started task."""

    @abstractmethod
    async def wait(self) -> TaskOutcome:
        """Wait until the task has ended (and its output is collected)."""

    @abstractmethod
    async def cancel(self, grace: float) -> None:
        """Stop the task: SIGTERM, then SIGKILL after ``grace`` seconds. Idempotent."""

    def identity(self) -> dict[str, Any]:
        """What finds this task's processes/container again after a worker crash."""
        return {}

    @abstractmethod
    def usage(self) -> TaskUsage:
        """Measured usage since the previous call. May block briefly: call it off the
        event loop (the TaskManager samples every task in one worker thread)."""


class Runtime(ABC):
    name: str

    @abstractmethod
    async def refusal(self, spec: TaskSpec) -> str | None:
        """Why this runtime cannot run ``spec`` (a message for the master), or None."""

    @abstractmethod
    async def start(self, spec: TaskSpec, task_dir: Path, env: Mapping[str, str]) -> TaskHandle:
        """Start the task; raise RuntimeStartError with a clear message on failure."""

    async def cleanup_interrupted(self, marker: dict[str, Any]) -> None:
        """Stop what is left of a task whose worker died (``marker``: its task.json)."""
        return None

    async def close(self) -> None:
        return None
