"""Docker runtime: the task's ``docker_image`` run as a container (official ``docker`` SDK).

Used for every task that names an image. Limits: ``req_cpu`` cores -> ``nano_cpus``,
``req_memory`` GB -> ``mem_limit`` (and the same ``memswap_limit``: no swap on top),
``req_gpu`` -> a GPU device request. The task's ``command`` (if any) runs as
``/bin/sh -c COMMAND`` inside the image (its entry point replaced; stderr on stdout's
pipe, so the output keeps its order as with the process runtime); without one the
image's own entry point and command run. A Go master's ``docker run ... IMAGE`` line
naming the task's image is not run inside the image: the image runs as that line says
(docker_command.py). The task directory is mounted at ``/cloudai/task``. An init
process (``docker run --init``) forwards signals to the task and reaps orphans.

Images are never pulled: an image missing on the worker's engine fails the task at once
with a message saying so. Cancel = ``docker stop`` (SIGTERM, then SIGKILL after the
grace period); a finished or cancelled task's container is removed. A container killed
by the kernel's OOM killer ends with the reason "out of memory". Usage comes from
one-shot container stats: CPU nanoseconds per wall-clock second, memory in use less the
page cache.

The SDK is blocking: every call runs in a thread. The client factory is injectable so
the logic is tested with a fake client; with no reachable engine the runtime refuses
tasks with a clear message naming the engine's address.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cloudai.worker.runtimes.base import (
    Runtime,
    RuntimeStartError,
    TaskHandle,
    TaskOutcome,
    TaskSpec,
    TaskUsage,
)
from cloudai.worker.runtimes.docker_command import parse_docker_run
from cloudai.worker.runtimes.logs import BoundedLog
from cloudai.worker.settings import GIB

log = logging.getLogger(__name__)

CONTAINER_TASK_DIR = "/cloudai/task"
DEFAULT_ENGINE = "unix:///var/run/docker.sock"
OUT_OF_MEMORY = "out of memory"
MERGE_STDERR = "exec 2>&1\n"  # the first line of the shell script a task's command runs in
ENGINE_CHECK_TTL = 30.0  # seconds a reachability answer is trusted
_LOG_DRAIN = 5.0

ClientFactory = Callable[[], Any]


def default_client_factory() -> Any:
    import docker  # imported lazily: the worker starts without it

    return docker.from_env(timeout=10)


def engine_address() -> str:
    """Where the default client factory looks for the engine (``DOCKER_HOST``)."""
    return os.environ.get("DOCKER_HOST", "").strip() or DEFAULT_ENGINE


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps: its cause/context chain and exceptions in its args
    (requests and urllib3 wrap the socket's error like that)."""
    seen: list[BaseException] = []
    todo = [exc]
    while todo and len(seen) < 20:
        current = todo.pop(0)
        if any(current is known for known in seen):
            continue
        seen.append(current)
        for arg in current.args:
            nested = arg if isinstance(arg, tuple) else (arg,)
            todo.extend(a for a in nested if isinstance(a, BaseException))
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                todo.append(linked)
    return seen


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def connection_problem(exc: BaseException) -> str | None:
    """Why the engine could not be reached, in words, if ``exc`` says so; else None."""
    for cause in _causes(exc):
        if isinstance(cause, FileNotFoundError):
            return "no such socket (is dockerd running?)"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused (is dockerd running?)"
        if isinstance(cause, PermissionError):
            return "permission denied (the worker's user needs access to the engine's socket)"
        if isinstance(cause, TimeoutError) or "timed out" in str(cause).lower():
            return "no answer in time"
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
    text = str(exc)
    if "Connection aborted" in text or "Max retries exceeded" in text:
        return "the connection failed"
    return None


def engine_error(exc: BaseException) -> str:
    """One line for people from an exception of the SDK: the engine's own explanation,
    or why the engine could not be reached; never a traceback or a nest of reprs."""
    unreachable = connection_problem(exc)
    if unreachable is not None:
        return f"no Docker engine is reachable at {engine_address()}: {unreachable}"
    explanation = getattr(exc, "explanation", None)
    if isinstance(explanation, str) and explanation.strip():
        return _one_line(explanation)
    return _one_line(str(exc) or type(exc).__name__)


def container_name(worker_id: str, task_id: str) -> str:
    """A valid, recognisable container name ([a-zA-Z0-9][a-zA-Z0-9_.-]*)."""
    raw = f"cloudai-{worker_id}-{task_id}"
    return re.sub(r"[^a-zA-Z0-9_.-]", "_", raw)[:200]


def container_options(
    spec: TaskSpec, worker_id: str, task_dir: Path, env: Mapping[str, str]
) -> dict[str, Any]:
    """Keyword arguments of ``client.containers.create`` for ``spec``. Pure."""
    options: dict[str, Any] = {
        "image": spec.docker_image,
        "command": None,  # the image's own
        "name": container_name(worker_id, spec.task_id),
        "labels": {"cloudai.task_id": spec.task_id, "cloudai.worker_id": worker_id},
        "environment": dict(env),
        "volumes": {str(task_dir): {"bind": CONTAINER_TASK_DIR, "mode": "rw"}},
        "init": True,
    }
    cpus = spec.req_cpu
    memory = int(spec.req_memory * GIB)
    line = parse_docker_run(spec.command, spec.docker_image) if spec.command.strip() else None
    if line is not None:  # a Go master's `docker run ... IMAGE`: run the image as it says
        options["command"] = list(line.args) or None
        cpus = cpus or line.cpus or 0.0
        memory = memory or line.memory_bytes or 0
    elif spec.command.strip():
        # stderr on stdout's pipe, as the process runtime does: the output keeps its order
        # (the engine copies two pipes independently).
        options["entrypoint"] = ["/bin/sh", "-c"]
        options["command"] = [MERGE_STDERR + spec.command]
    if cpus > 0:
        options["nano_cpus"] = int(cpus * 1e9)
    if memory > 0:
        options["mem_limit"] = memory
        options["memswap_limit"] = memory
    if spec.req_gpu > 0:
        from docker.types import DeviceRequest

        options["device_requests"] = [
            DeviceRequest(count=math.ceil(spec.req_gpu), capabilities=[["gpu"]])
        ]
    return options


def in_own_thread(fn: Callable[[], Any], name: str) -> asyncio.Future[Any]:
    """Run a long blocking call (log stream, container wait) in a dedicated daemon
    thread, so it never occupies the default executor that sampling relies on."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(value: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)

    def target() -> None:
        try:
            value, error = fn(), None
        except BaseException as exc:
            value, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop is closed
            loop.call_soon_threadsafe(settle, value, error)

    threading.Thread(target=target, name=name, daemon=True).start()
    return future


def memory_in_use(stats: Mapping[str, Any]) -> int:
    """Container memory like ``docker stats``: usage less the inactive page cache."""
    memory = stats.get("memory_stats") or {}
    usage = int(memory.get("usage") or 0)
    detail = memory.get("stats") or {}
    cache = detail.get("inactive_file", detail.get("total_inactive_file", 0)) or 0
    return max(0, usage - int(cache))


def cpu_nanoseconds(stats: Mapping[str, Any]) -> int:
    return int(((stats.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage") or 0)


class DockerHandle(TaskHandle):
    def __init__(self, container: Any, output: BoundedLog, clock: Callable[[], float]) -> None:
        self._container = container
        self._output = output
        self._clock = clock
        self._prev: tuple[int, float] | None = None
        self._stopped = threading.Event()
        self._pump = in_own_thread(self._pump_logs, f"logs-{container.id}")
        self._cancelling: asyncio.Task[None] | None = None
        self._outcome: TaskOutcome | None = None

    def _pump_logs(self) -> None:
        try:
            for chunk in self._container.logs(stream=True, follow=True, stdout=True, stderr=True):
                self._output.write(chunk)
        except Exception as exc:
            if not self._stopped.is_set():
                log.warning("container %s: reading logs failed: %s", self._container.id, exc)

    def _stop_container(self, grace: float) -> None:
        try:
            self._container.stop(timeout=max(1, math.ceil(grace)))
        except Exception as exc:
            log.warning("container %s: stop failed (%s); killing it", self._container.id, exc)
            with contextlib.suppress(Exception):
                self._container.kill()

    async def cancel(self, grace: float) -> None:
        if self._cancelling is None:
            self._cancelling = asyncio.ensure_future(asyncio.to_thread(self._stop_container, grace))
        await asyncio.shield(self._cancelling)

    async def wait(self) -> TaskOutcome:
        if self._outcome is not None:
            return self._outcome
        detail = reason = ""
        try:
            answer = await in_own_thread(self._container.wait, f"wait-{self._container.id}")
            code = int(answer.get("StatusCode", -1))
            error = answer.get("Error")
            if isinstance(error, dict):
                error = error.get("Message")
            if error:
                detail = f"docker: {_one_line(str(error))}"
        except Exception as exc:
            code, detail = -1, f"waiting for the container failed: {engine_error(exc)}"
        self._stopped.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._pump), _LOG_DRAIN)
        except TimeoutError:
            log.warning("container %s: logs still streaming; giving up", self._container.id)
        limit = await asyncio.to_thread(self._oom_killed_limit)
        if limit is not None:
            reason = OUT_OF_MEMORY
            detail = "killed by the OOM killer" + (
                f" at its memory limit of {limit / 2**20:g} MiB" if limit else ""
            )
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self._container.remove, force=True)
        tail, dropped = self._output.tail()
        self._output.close()
        if not detail:
            detail = f"exit code {code}"
        self._outcome = TaskOutcome(code, tail, dropped, detail, reason)
        return self._outcome

    def _oom_killed_limit(self) -> int | None:
        """The container's memory limit in bytes (0: none) if the OOM killer ended it;
        None if it did not (or the engine cannot tell)."""
        try:
            self._container.reload()
            attrs = self._container.attrs or {}
        except Exception:
            return None
        if not (attrs.get("State") or {}).get("OOMKilled"):
            return None
        return int((attrs.get("HostConfig") or {}).get("Memory") or 0)

    def identity(self) -> dict[str, Any]:
        return {"container_id": self._container.id}

    def usage(self) -> TaskUsage:
        try:
            stats = self._container.stats(stream=False, one_shot=True)
        except TypeError:  # an SDK without one_shot
            stats = self._container.stats(stream=False)
        except Exception:
            return TaskUsage()
        now = self._clock()
        cpu = cpu_nanoseconds(stats)
        percent = 0.0
        if self._prev is not None:
            prev_cpu, prev_at = self._prev
            elapsed = now - prev_at
            if elapsed > 0:
                percent = max(0.0, (cpu - prev_cpu) / 1e9 / elapsed * 100.0)
        self._prev = (cpu, now)
        return TaskUsage(cpu_percent=round(percent, 2), memory_bytes=memory_in_use(stats))


class DockerRuntime(Runtime):
    name = "docker"

    def __init__(
        self,
        worker_id: str,
        max_log_bytes: int,
        client_factory: ClientFactory | None = default_client_factory,
        check_ttl: float = ENGINE_CHECK_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``client_factory=None`` disables the runtime (tasks with an image are refused)."""
        self.worker_id = worker_id
        self.max_log_bytes = max_log_bytes
        self._factory = client_factory
        self._check_ttl = check_ttl
        self._clock = clock
        self._client: Any = None
        self._checked_at: float | None = None
        self._problem: str | None = "not checked yet"
        self._lock = threading.Lock()

    def engine_problem(self) -> str | None:
        """None when an engine answers ping; otherwise why not. Blocking; cached."""
        with self._lock:
            now = self._clock()
            if self._checked_at is not None and now - self._checked_at < self._check_ttl:
                return self._problem
            self._checked_at = now
            if self._factory is None:
                self._problem = "the Docker runtime is disabled on this worker"
                return self._problem
            try:
                if self._client is None:
                    self._client = self._factory()
                self._client.ping()
            except Exception as exc:
                self._client = None
                reason = connection_problem(exc) or _one_line(str(exc) or type(exc).__name__)
                self._problem = f"no Docker engine is reachable at {engine_address()}: {reason}"
            else:
                self._problem = None
            return self._problem

    async def refusal(self, spec: TaskSpec) -> str | None:
        if not spec.docker_image.strip():
            return f"task {spec.task_id!r} has no docker_image"
        problem = await asyncio.to_thread(self.engine_problem)
        if problem is not None:
            return f"task {spec.task_id!r} needs Docker image {spec.docker_image!r}: {problem}"
        return None

    async def start(self, spec: TaskSpec, task_dir: Path, env: Mapping[str, str]) -> TaskHandle:
        await asyncio.to_thread(task_dir.mkdir, parents=True, exist_ok=True)
        if await asyncio.to_thread(self.engine_problem) is not None or self._client is None:
            raise RuntimeStartError(f"cannot run image {spec.docker_image!r}: {self._problem}")
        options = container_options(spec, self.worker_id, task_dir, env)
        if spec.command.strip() and "entrypoint" not in options:
            log.info(
                "task %s: the command is a `docker run` line for its own image (as a Go"
                " master sends it): running the image itself",
                spec.task_id,
            )
        container = await asyncio.to_thread(self._create_and_start, spec.docker_image, options)
        output = BoundedLog(task_dir / "output.log", self.max_log_bytes)
        return DockerHandle(container, output, self._clock)

    def _create_and_start(self, image: str, options: dict[str, Any]) -> Any:
        """Create and start the container; never pulls (``containers.run`` would pull a
        missing image, for as long as the registry takes). Blocking."""
        from docker.errors import ImageNotFound

        client = self._client
        try:
            container = client.containers.create(**options)
        except ImageNotFound as exc:
            raise RuntimeStartError(
                f"image {image!r} is not on worker {self.worker_id}'s Docker engine, and"
                " workers do not pull images: load it there first (docker pull or docker load)"
            ) from exc
        except Exception as exc:  # APIError (a name in use, a bad limit), a lost engine ...
            raise RuntimeStartError(f"cannot run image {image!r}: {engine_error(exc)}") from exc
        try:
            container.start()
        except Exception as exc:  # no such entry point, a device that cannot be given ...
            with contextlib.suppress(Exception):
                container.remove(force=True)
            raise RuntimeStartError(f"cannot run image {image!r}: {engine_error(exc)}") from exc
        return container

    async def cleanup_interrupted(self, marker: dict[str, Any]) -> None:
        container_id = marker.get("container_id")
        if not isinstance(container_id, str) or not container_id:
            return
        if await asyncio.to_thread(self.engine_problem) is not None:
            log.warning(
                "cannot remove container %s of an interrupted task: %s", container_id, self._problem
            )
            return
        client = self._client

        def remove() -> None:
            with contextlib.suppress(Exception):  # already gone: nothing to do
                client.containers.get(container_id).remove(force=True)

        await asyncio.to_thread(remove)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(client.close)
