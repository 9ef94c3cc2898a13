"""The Docker runtime's logic against a fake client; a live test when an engine answers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudai.worker.runtimes.base import RuntimeStartError, TaskSpec
from cloudai.worker.runtimes.docker import (
    CONTAINER_TASK_DIR,
    DockerRuntime,
    container_name,
    container_options,
    memory_in_use,
)
from cloudai.worker.settings import GIB


class FakeContainer:
    def __init__(self, output: list[bytes], exit_code: int = 0) -> None:
        self.id = "c0ffee"
        self.output = output
        self.exit_code = exit_code
        self.finished = threading.Event()
        self.stop_calls: list[int] = []
        self.removed = False
        self.stats_answers: list[dict[str, Any]] = []

    def logs(self, **kwargs: Any) -> Iterator[bytes]:
        assert kwargs == {"stream": True, "follow": True, "stdout": True, "stderr": True}
        yield from self.output
        self.finished.wait(10)

    def wait(self) -> dict[str, Any]:
        self.finished.wait(10)
        return {"StatusCode": self.exit_code, "Error": None}

    def stop(self, timeout: int) -> None:
        self.stop_calls.append(timeout)
        self.exit_code = 137
        self.finished.set()

    def kill(self) -> None:
        self.finished.set()

    def remove(self, force: bool = False) -> None:
        self.removed = force

    def stats(self, stream: bool, one_shot: bool) -> dict[str, Any]:
        assert (stream, one_shot) == (False, True)
        return self.stats_answers.pop(0)


class FakeContainers:
    def __init__(self, container: FakeContainer | None, error: Exception | None = None) -> None:
        self.container = container
        self.error = error
        self.calls: list[dict[str, Any]] = []

    def run(self, **kwargs: Any) -> FakeContainer:
        self.calls.append(kwargs)
        if self.error is not None:
            raise self.error
        assert self.container is not None
        return self.container


class FakeClient:
    def __init__(self, container: FakeContainer | None = None, ping_error: bool = False) -> None:
        self.containers = FakeContainers(container)
        self.ping_error = ping_error
        self.pings = 0
        self.closed = False

    def ping(self) -> bool:
        self.pings += 1
        if self.ping_error:
            raise ConnectionError("Error while fetching server API version")
        return True

    def close(self) -> None:
        self.closed = True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def image_spec(**kwargs: Any) -> TaskSpec:
    values: dict[str, Any] = {"task_id": "t1", "docker_image": "alpine:3", "command": "echo hi"}
    values.update(kwargs)
    return TaskSpec(**values)


async def test_refuses_an_image_when_no_engine_is_reachable() -> None:
    def no_engine() -> Any:
        raise FileNotFoundError("/var/run/docker.sock")

    runtime = DockerRuntime("w1", 1024, no_engine)
    message = await runtime.refusal(image_spec())
    assert message is not None
    assert "'alpine:3'" in message and "no Docker engine is reachable" in message
    assert "docker.sock" in message


async def test_refuses_when_the_engine_does_not_answer_ping() -> None:
    client = FakeClient(ping_error=True)
    message = await DockerRuntime("w1", 1024, lambda: client).refusal(image_spec())
    assert message is not None and "no Docker engine is reachable" in message


async def test_disabled_runtime_refuses_with_a_clear_message() -> None:
    message = await DockerRuntime("w1", 1024, None).refusal(image_spec())
    assert message is not None and "disabled" in message


async def test_refuses_a_task_without_image() -> None:
    runtime = DockerRuntime("w1", 1024, lambda: FakeClient())
    assert await runtime.refusal(image_spec(docker_image="")) == "task 't1' has no docker_image"


async def test_engine_check_is_cached_then_retried() -> None:
    clock = Clock()
    client = FakeClient(ping_error=True)
    runtime = DockerRuntime("w1", 1024, lambda: client, check_ttl=30, clock=clock)
    assert runtime.engine_problem() is not None
    assert runtime.engine_problem() is not None
    assert client.pings == 1
    client.ping_error = False
    clock.now += 31
    assert runtime.engine_problem() is None  # the engine came up: no restart needed
    assert await runtime.refusal(image_spec()) is None


def test_container_options_apply_limits_and_command(tmp_path: Path) -> None:
    options = container_options(
        image_spec(req_cpu=1.5, req_memory=0.5, req_gpu=1, task_id="job:1@x"),
        "node-1",
        tmp_path,
        {"CLOUDAI_TASK_ID": "job:1@x"},
    )
    assert options["image"] == "alpine:3"
    assert options["command"] == ["/bin/sh", "-c", "echo hi"]
    assert options["nano_cpus"] == 1_500_000_000
    assert options["mem_limit"] == GIB // 2
    assert options["device_requests"][0]["Count"] == 1
    assert options["detach"] is True
    assert options["name"] == "cloudai-node-1-job_1_x"
    assert options["labels"] == {"cloudai.task_id": "job:1@x", "cloudai.worker_id": "node-1"}
    assert options["volumes"] == {str(tmp_path): {"bind": CONTAINER_TASK_DIR, "mode": "rw"}}
    assert options["environment"] == {"CLOUDAI_TASK_ID": "job:1@x"}


def test_container_options_without_requests_or_command(tmp_path: Path) -> None:
    options = container_options(image_spec(command=""), "w", tmp_path, {})
    assert options["command"] is None  # the image's own command
    assert not {"nano_cpus", "mem_limit", "device_requests"} & options.keys()


def test_container_name_is_valid() -> None:
    assert container_name("a b", "t/1") == "cloudai-a_b-t_1"


def test_memory_in_use_subtracts_the_page_cache() -> None:
    assert memory_in_use({"memory_stats": {"usage": 1000, "stats": {"inactive_file": 300}}}) == 700
    assert memory_in_use({"memory_stats": {"usage": 1000, "stats": {"total_inactive_file": 1}}})
    assert memory_in_use({}) == 0


async def test_runs_a_container_collects_logs_and_removes_it(tmp_path: Path) -> None:
    container = FakeContainer([b"hello\n", b"world\n"], exit_code=0)
    client = FakeClient(container)
    runtime = DockerRuntime("w1", 1024, lambda: client)
    handle = await runtime.start(image_spec(req_cpu=2), tmp_path / "t1", {"A": "1"})
    assert client.containers.calls[0]["nano_cpus"] == 2_000_000_000
    container.finished.set()
    outcome = await asyncio.wait_for(handle.wait(), 10)
    assert (outcome.exit_code, outcome.log_tail, outcome.dropped_bytes) == (
        0,
        b"hello\nworld\n",
        0,
    )
    assert container.removed is True
    await runtime.close()
    assert client.closed


async def test_logs_are_bounded(tmp_path: Path) -> None:
    container = FakeContainer([b"x" * 1000, b"y" * 1000, b"z" * 100])
    runtime = DockerRuntime("w1", 1024, lambda: FakeClient(container))
    handle = await runtime.start(image_spec(), tmp_path, {})
    container.finished.set()
    outcome = await asyncio.wait_for(handle.wait(), 10)
    assert len(outcome.log_tail) == 1024 and outcome.log_tail.endswith(b"y" * 924 + b"z" * 100)
    assert outcome.dropped_bytes == 2100 - 1024


async def test_cancel_stops_the_container_with_the_grace_period(tmp_path: Path) -> None:
    container = FakeContainer([b"started\n"])
    runtime = DockerRuntime("w1", 1024, lambda: FakeClient(container))
    handle = await runtime.start(image_spec(), tmp_path, {})
    await asyncio.wait_for(handle.cancel(2.5), 10)
    await handle.cancel(2.5)  # idempotent
    outcome = await asyncio.wait_for(handle.wait(), 10)
    assert container.stop_calls == [3]
    assert outcome.exit_code == 137


async def test_start_failure_is_a_clear_error(tmp_path: Path) -> None:
    client = FakeClient()
    client.containers.error = RuntimeError("pull access denied for nosuchimage")
    runtime = DockerRuntime("w1", 1024, lambda: client)
    with pytest.raises(RuntimeStartError, match="pull access denied"):
        await runtime.start(image_spec(docker_image="nosuchimage"), tmp_path, {})


async def test_usage_from_container_stats(tmp_path: Path) -> None:
    container = FakeContainer([])
    clock = Clock()
    runtime = DockerRuntime("w1", 1024, lambda: FakeClient(container), clock=clock)
    handle = await runtime.start(image_spec(), tmp_path, {})
    container.stats_answers = [
        {"cpu_stats": {"cpu_usage": {"total_usage": 1_000_000_000}}, "memory_stats": {"usage": 5}},
        {"cpu_stats": {"cpu_usage": {"total_usage": 4_000_000_000}}, "memory_stats": {"usage": 7}},
    ]
    first = handle.usage()
    clock.now += 2.0
    second = handle.usage()
    assert (first.cpu_percent, first.memory_bytes) == (0.0, 5)
    assert (second.cpu_percent, second.memory_bytes) == (150.0, 7)  # 3 s of CPU in 2 s
    container.finished.set()
    await handle.wait()


def _engine_reachable() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
        client.close()
    except Exception:
        return False
    return True


@pytest.mark.skipif(not _engine_reachable(), reason="no Docker engine reachable")
async def test_live_container(tmp_path: Path) -> None:  # pragma: no cover - needs an engine
    runtime = DockerRuntime("unit-test", 1024 * 1024)
    spec = TaskSpec(task_id="live-1", docker_image="alpine:3", command="echo live; exit 4")
    assert await runtime.refusal(spec) is None
    handle = await runtime.start(spec, tmp_path, {})
    outcome = await asyncio.wait_for(handle.wait(), 120)
    assert outcome.exit_code == 4 and b"live" in outcome.log_tail
    await runtime.close()
