"""The Docker runtime against the real engine: a real worker process, a fake master in
this process speaking the wire (as the Go master does), and a locally built image
(tests/docker_image.py; no registry). Without an engine these tests skip, or fail in CI.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from cloudai.proto import pb, rpc
from cloudai.worker.runtimes.base import TaskSpec
from cloudai.worker.runtimes.docker import DockerRuntime
from cloudai.worker.settings import GIB
from tests.docker_image import (
    ENTRYPOINT_BANNER,
    containers_of,
    engine_client,
    ensure_test_image,
)
from tests.harness import Process, async_wait_until, start_process, worker_args

MIB = 1 << 20


@pytest.fixture(scope="session")
def docker_engine() -> Any:
    client = engine_client()
    yield client
    client.close()


@pytest.fixture(scope="session")
def test_image(docker_engine: Any) -> str:
    return ensure_test_image(docker_engine)


def unique(prefix: str) -> str:
    """Task ids unique across concurrent test runs on the same engine."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class DockerWorker:
    """A real worker process with the Docker runtime, registered with a fake master."""

    def __init__(self, process: Process, master: Any) -> None:
        self.process = process
        self.master = master
        self.worker_id = str(process.ready["worker_id"])
        self.work_dir = Path(process.ready["work_dir"])
        self.channel = grpc.aio.insecure_channel(str(process.ready["address"]))
        self.stub = rpc.MasterWorkerStub(self.channel)

    async def assign(self, task: pb.Task) -> pb.TaskAck:
        return await self.stub.AssignTask(task, timeout=10)

    async def result(self, task_id: str, timeout: float = 30.0) -> pb.TaskResult:
        result: pb.TaskResult = await async_wait_until(
            lambda: self.master.result(task_id), timeout, f"the result of {task_id}"
        )
        return result

    async def run(self, task: pb.Task, timeout: float = 30.0) -> pb.TaskResult:
        ack = await self.assign(task)
        assert ack.success, ack.message
        return await self.result(task.task_id, timeout)

    def task_dir(self, task_id: str) -> Path:
        return self.work_dir / "tasks" / task_id

    async def close(self) -> None:
        await self.channel.close()
        await asyncio.to_thread(self.process.close, 20.0)


StartWorker = Callable[..., Awaitable[DockerWorker]]


@pytest.fixture
async def docker_worker(
    tmp_path: Path, masters: Any, fake_master_class: Any, test_image: str
) -> AsyncIterator[StartWorker]:
    """Start a worker (``*args``: more flags, ``**env``: its environment) whose Docker
    runtime is on, registered with a fresh fake master."""
    started: list[DockerWorker] = []

    async def start(*args: str, **env: str) -> DockerWorker:
        master = fake_master_class()
        address = await masters.start(master)
        worker_id = unique("dw")
        argv = worker_args(tmp_path, worker_id, "--insecure", "--master", address, *args)
        argv.remove("--no-docker")
        process = await asyncio.to_thread(
            start_process, argv, tmp_path, f"worker-{worker_id}", 20.0, **env
        )
        worker = DockerWorker(process, master)
        started.append(worker)
        await async_wait_until(lambda: master.registrations, 20, "the worker's registration")
        return worker

    yield start
    for worker in started:
        await worker.close()


def no_traceback(worker: DockerWorker) -> None:
    log = worker.process.log()
    assert "Traceback" not in log, log


# -- runs, output, exit code ---------------------------------------------------------------------


async def test_an_image_task_reports_its_output_and_exit_code(
    docker_worker: StartWorker, docker_engine: Any, test_image: str
) -> None:
    worker = await docker_worker()
    with_command = unique("cmd")
    result = await worker.run(
        pb.Task(
            task_id=with_command,
            docker_image=test_image,
            command='echo "out in $CLOUDAI_TASK_ID"; echo err >&2; echo f >/cloudai/task/f; exit 3',
        )
    )
    assert (result.status, result.exit_code, result.logs_truncated) == ("failure", 3, False)
    assert result.logs == f"out in {with_command}\nerr\n[cloudai] exit code 3\n"
    assert (worker.task_dir(with_command) / "f").read_text() == "f\n"  # the task directory
    assert (
        worker.task_dir(with_command) / "output.log"
    ).read_text() == f"out in {with_command}\nerr\n"
    assert containers_of(docker_engine, with_command) == []  # removed after the task

    own_entrypoint = unique("entry")
    result = await worker.run(pb.Task(task_id=own_entrypoint, docker_image=test_image))
    assert (result.status, result.exit_code) == ("success", 0)
    assert result.logs.startswith(f"{ENTRYPOINT_BANNER} default-cmd\n")
    assert containers_of(docker_engine, own_entrypoint) == []
    no_traceback(worker)


async def test_output_is_bounded_exactly_like_process_output(
    docker_worker: StartWorker, test_image: str
) -> None:
    """1.5 MB of output: the same tail, marker and footer from both runtimes."""
    worker = await docker_worker()
    command = "head -c 1500000 /dev/zero | tr '\\0' x; echo; echo last line"
    in_image = await worker.run(
        pb.Task(task_id=unique("big"), docker_image=test_image, command=command)
    )
    as_process = await worker.run(pb.Task(task_id=unique("bigp"), command=command))
    assert in_image.logs_truncated and as_process.logs_truncated
    assert in_image.logs == as_process.logs
    first, rest = in_image.logs.split("\n", 1)
    dropped = 1500000 + len("\nlast line\n") - MIB
    assert first == (
        f"[cloudai] output truncated: the first {dropped} bytes were dropped;"
        f" the last {MIB} bytes follow"
    )
    assert rest.endswith("x\nlast line\n[cloudai] exit code 0\n")


# -- limits and cancel ---------------------------------------------------------------------------


async def test_limits_are_applied_and_cancel_stops_and_removes_the_container(
    docker_worker: StartWorker, docker_engine: Any, test_image: str
) -> None:
    worker = await docker_worker("--kill-grace", "5")
    task_id = unique("lim")
    command = "trap 'echo got SIGTERM; exit 143' TERM; echo ready; sleep 60 & wait"
    ack = await worker.assign(
        pb.Task(
            task_id=task_id,
            docker_image=test_image,
            command=command,
            req_cpu=0.5,
            req_memory=0.0625,
        )
    )
    assert ack.success, ack.message
    output = worker.task_dir(task_id) / "output.log"
    await async_wait_until(
        lambda: output.exists() and b"ready" in output.read_bytes(), 20, "the task's output"
    )
    (container,) = containers_of(docker_engine, task_id)
    host = container.attrs["HostConfig"]
    assert (host["NanoCpus"], host["Memory"], host["MemorySwap"]) == (
        500_000_000,
        64 * MIB,
        64 * MIB,
    )
    assert host["Init"] is True
    assert container.attrs["Config"]["Labels"]["cloudai.worker_id"] == worker.worker_id

    cancel = await worker.stub.CancelTask(pb.TaskID(task_id=task_id), timeout=10)
    assert cancel.success, cancel.message
    result = await worker.result(task_id)
    assert (result.status, result.exit_code) == ("cancelled", 143)
    assert result.logs == (
        "ready\ngot SIGTERM\n[cloudai] cancelled (cancelled by the master); exit code 143\n"
    )
    assert containers_of(docker_engine, task_id) == []
    no_traceback(worker)


async def test_sigterm_drains_then_stops_and_removes_containers(
    docker_worker: StartWorker, docker_engine: Any, test_image: str
) -> None:
    """As docs/WORKER.md says: running tasks get --drain-timeout seconds, then are
    cancelled (docker stop); every result is delivered; no container is left."""
    worker = await docker_worker("--drain-timeout", "8", "--kill-grace", "2")
    finishes = unique("drain-ok")
    waits_for_go = (
        "echo started; while [ ! -e /cloudai/task/go ]; do sleep 0.05; done; echo finished"
    )
    long_running = unique("drain-stop")
    ignores = "trap 'echo got SIGTERM; exit 143' TERM; echo started; sleep 60 & wait"
    for task_id, command in ((finishes, waits_for_go), (long_running, ignores)):
        ack = await worker.assign(
            pb.Task(task_id=task_id, docker_image=test_image, command=command)
        )
        assert ack.success, ack.message
    for task_id in (finishes, long_running):
        log = worker.task_dir(task_id) / "output.log"
        await async_wait_until(lambda log=log: log.exists() and log.read_bytes(), 20, "output")

    worker.process.send_signal(signal.SIGTERM)
    refused = unique("late")
    await async_wait_until(lambda: "waiting up to" in worker.process.log(), 10, "the drain")
    ack = await worker.assign(pb.Task(task_id=refused, docker_image=test_image))
    assert not ack.success and "shutting down" in ack.message
    (worker.task_dir(finishes) / "go").touch()  # finishes within the drain timeout
    assert await asyncio.to_thread(worker.process.proc.wait, 30) == 0

    done = worker.master.result(finishes)
    assert done is not None and (done.status, done.exit_code) == ("success", 0)
    assert done.logs == "started\nfinished\n[cloudai] exit code 0\n"
    stopped = worker.master.result(long_running)
    assert stopped is not None and (stopped.status, stopped.exit_code) == ("cancelled", 143)
    assert stopped.logs == (
        "started\ngot SIGTERM\n[cloudai] cancelled (the worker is shutting down); exit code 143\n"
    )
    for task_id in (finishes, long_running):
        assert containers_of(docker_engine, task_id) == []
    no_traceback(worker)


# -- failures: one clear line --------------------------------------------------------------------


async def test_a_missing_image_or_an_engine_error_is_one_clear_line(
    docker_worker: StartWorker, docker_engine: Any, test_image: str
) -> None:
    worker = await docker_worker()
    task_id = unique("noimg")
    result = await worker.run(pb.Task(task_id=task_id, docker_image="cloudai-no-such-image:404"))
    assert (result.status, result.exit_code) == ("failure", -1)
    assert result.logs == (
        "[cloudai] the task could not start: image 'cloudai-no-such-image:404' is not on worker"
        f" {worker.worker_id}'s Docker engine, and workers do not pull images: load it there"
        " first (docker pull or docker load)\n"
    )
    assert containers_of(docker_engine, task_id) == []

    too_small = unique("tiny")  # the engine refuses the container: its explanation, one line
    result = await worker.run(
        pb.Task(task_id=too_small, docker_image=test_image, command="true", req_memory=1 / 1024)
    )
    assert (result.status, result.exit_code) == ("failure", -1)
    assert result.logs == (
        f"[cloudai] the task could not start: cannot run image {test_image!r}:"
        " Minimum memory limit allowed is 6MB\n"
    )
    assert containers_of(docker_engine, too_small) == []
    no_traceback(worker)


async def test_a_killed_workers_next_start_removes_its_containers(
    docker_worker: StartWorker, docker_engine: Any, test_image: str, tmp_path: Path
) -> None:
    worker = await docker_worker()
    task_id = unique("orphan")
    ack = await worker.assign(
        pb.Task(task_id=task_id, docker_image=test_image, command="echo up; sleep 60")
    )
    assert ack.success, ack.message
    log = worker.task_dir(task_id) / "output.log"
    await async_wait_until(lambda: log.exists() and log.read_bytes(), 20, "the task's output")
    worker.process.kill()  # SIGKILL: the container outlives the worker
    (container,) = containers_of(docker_engine, task_id)
    assert container.status == "running"

    argv = worker_args(tmp_path, worker.worker_id, "--insecure", "--master", worker.master.address)
    argv.remove("--no-docker")
    again = await asyncio.to_thread(start_process, argv, tmp_path, "worker-again")
    try:
        result = await worker.result(task_id)
        assert (result.status, result.exit_code) == ("failure", -1)
        assert result.logs.startswith("up\n")
        assert containers_of(docker_engine, task_id) == []
    finally:
        await asyncio.to_thread(again.close, 20.0)


async def test_an_unreachable_engine_is_one_clear_line(
    docker_worker: StartWorker, tmp_path: Path, test_image: str
) -> None:
    dead = f"unix://{tmp_path}/dead-docker.sock"
    worker = await docker_worker(DOCKER_HOST=dead)
    ack = await worker.assign(pb.Task(task_id=unique("nodock"), docker_image=test_image))
    assert not ack.success
    assert ack.message.endswith(
        f"needs Docker image {test_image!r}: no Docker engine is reachable at {dead}:"
        " no such socket (is dockerd running?)"
    )
    assert "\n" not in ack.message
    no_traceback(worker)


async def test_an_oom_killed_container_fails_out_of_memory(
    docker_worker: StartWorker, docker_engine: Any, test_image: str
) -> None:
    worker = await docker_worker()
    task_id = unique("oom")
    result = await worker.run(
        pb.Task(
            task_id=task_id,
            docker_image=test_image,
            command="echo allocating; tail /dev/zero",  # tail keeps its one endless line
            req_memory=16 / 1024,
        )
    )
    assert (result.status, result.exit_code, result.reason) == ("failure", 137, "out of memory")
    assert result.logs == (
        "allocating\n[cloudai] out of memory: exit code 137"
        " (killed by the OOM killer at its memory limit of 16 MiB)\n"
    )
    assert containers_of(docker_engine, task_id) == []


async def test_the_runtime_reports_out_of_memory_as_the_reason(
    docker_engine: Any, test_image: str, tmp_path: Path
) -> None:
    """The runtime alone, as the worker uses it (the live test of the runtime)."""
    runtime = DockerRuntime("live", MIB)
    spec = TaskSpec(
        task_id=unique("live-oom"),
        docker_image=test_image,
        command="tail /dev/zero",
        req_memory=16 / 1024,
    )
    assert await runtime.refusal(spec) is None
    handle = await runtime.start(spec, tmp_path / spec.task_id, {})
    outcome = await asyncio.wait_for(handle.wait(), 60)
    await runtime.close()
    assert (outcome.exit_code, outcome.reason) == (137, "out of memory")
    assert containers_of(docker_engine, spec.task_id) == []
    assert int(16 / 1024 * GIB) == 16 * MIB


# -- a Go master's image task --------------------------------------------------------------------


async def test_a_go_masters_image_task_runs_the_images_own_entry_point(
    docker_worker: StartWorker, docker_engine: Any, test_image: str
) -> None:
    """Exactly what the Go CLI sends for ``task <worker> IMAGE -cpu_cores 0.5 -mem 0.0625``:
    the worker runs the image (its entry point, no command override) with those limits,
    not the ``docker run`` line inside the image."""
    worker = await docker_worker()
    task_id = unique("go")
    result = await worker.run(
        pb.Task(
            task_id=task_id,
            docker_image="cloudai-test-busybox:1",
            command="docker run --rm --cpus=0.5 --memory=64m cloudai-test-busybox:1",
            req_cpu=0.5,
            req_memory=0.0625,
        )
    )
    assert (result.status, result.exit_code) == ("success", 0)
    assert result.logs == (
        f"{ENTRYPOINT_BANNER} default-cmd\n"
        f"memory limit: {64 * MIB}\n"
        "cpu limit: 50000 100000\n"
        "[cloudai] exit code 0\n"
    )
    assert containers_of(docker_engine, task_id) == []
    assert "a `docker run` line for its own image" in worker.process.log()

    # A master that leaves the request fields at zero: the line's limits apply.
    task_id = unique("go0")
    result = await worker.run(
        pb.Task(
            task_id=task_id,
            docker_image=test_image,
            command=f"docker run --rm --cpus 0.25 -m 32m {test_image} extra words",
        )
    )
    assert (result.status, result.exit_code) == ("success", 0)
    assert result.logs == (
        f"{ENTRYPOINT_BANNER} extra words\n"
        f"memory limit: {32 * MIB}\n"
        "cpu limit: 25000 100000\n"
        "[cloudai] exit code 0\n"
    )
    no_traceback(worker)
