"""The Docker runtime's logic against a fake client (the real engine:
tests/integration/worker/test_docker_engine.py)."""

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
    engine_error,
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
        self.started = False
        self.stats_answers: list[dict[str, Any]] = []
        self.attrs: dict[str, Any] = {"State": {"OOMKilled": False}, "HostConfig": {"Memory": 0}}
        self.start_error: Exception | None = None

    def start(self) -> None:
        if self.start_error is not None:
            raise self.start_error
        self.started = True

    def reload(self) -> None:
        return None

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

    def create(self, **kwargs: Any) -> FakeContainer:
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
    assert message == (
        "task 't1' needs Docker image 'alpine:3': no Docker engine is reachable at"
        " unix:///var/run/docker.sock: no such socket (is dockerd running?)"
    )


async def test_an_unreachable_engine_is_one_line_naming_docker_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import docker.errors
    import requests

    monkeypatch.setenv("DOCKER_HOST", "unix:///tmp/no-such.sock")
    wrapped = requests.exceptions.ConnectionError(
        ("Connection aborted.", FileNotFoundError(2, "No such file or directory"))
    )

    def no_engine() -> Any:
        try:
            raise wrapped
        except requests.exceptions.ConnectionError as exc:
            message = f"Error while fetching server API version: {exc}"
            raise docker.errors.DockerException(message) from exc

    message = await DockerRuntime("w1", 1024, no_engine).refusal(image_spec())
    assert message is not None and "\n" not in message and "FileNotFoundError" not in message
    assert message.endswith(
        "no Docker engine is reachable at unix:///tmp/no-such.sock: no such socket"
        " (is dockerd running?)"
    )


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (ConnectionRefusedError(111, "Connection refused"), "connection refused"),
        (PermissionError(13, "Permission denied"), "permission denied"),
        (TimeoutError("timed out"), "no answer in time"),
        (OSError(113, "No route to host"), "No route to host"),
    ],
)
def test_engine_errors_are_one_line(
    error: Exception, words: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    outer = RuntimeError(("Connection aborted.", error))
    assert engine_error(outer) == (
        f"no Docker engine is reachable at unix:///var/run/docker.sock: {words}"
        + (" (is dockerd running?)" if words == "connection refused" else "")
        + (" (the worker's user needs access to the engine's socket)" if "perm" in words else "")
    )


def test_engine_api_errors_give_the_engines_explanation() -> None:
    import docker.errors

    exc = docker.errors.APIError("500 Server Error", explanation="Minimum memory limit\n is 6MB")
    assert engine_error(exc) == "Minimum memory limit is 6MB"
    assert engine_error(ValueError("x" * 400)).endswith("...")


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
    assert options["entrypoint"] == ["/bin/sh", "-c"]
    assert options["command"] == ["exec 2>&1\necho hi"]  # stderr on stdout's pipe
    assert options["nano_cpus"] == 1_500_000_000
    assert options["mem_limit"] == options["memswap_limit"] == GIB // 2  # no swap on top
    assert options["device_requests"][0]["Count"] == 1
    assert options["init"] is True
    assert options["name"] == "cloudai-node-1-job_1_x"
    assert options["labels"] == {"cloudai.task_id": "job:1@x", "cloudai.worker_id": "node-1"}
    assert options["volumes"] == {str(tmp_path): {"bind": CONTAINER_TASK_DIR, "mode": "rw"}}
    assert options["environment"] == {"CLOUDAI_TASK_ID": "job:1@x"}


def test_container_options_without_requests_or_command(tmp_path: Path) -> None:
    options = container_options(image_spec(command=""), "w", tmp_path, {})
    assert options["command"] is None  # the image's own command
    assert not {"nano_cpus", "mem_limit", "device_requests", "entrypoint"} & options.keys()


def test_a_go_masters_docker_run_line_runs_the_image_itself(tmp_path: Path) -> None:
    line = "docker run --rm --cpus=0.5 --memory=64m alpine:3"
    options = container_options(image_spec(command=line), "w", tmp_path, {})
    assert options["command"] is None and "entrypoint" not in options  # the image's own
    assert (options["nano_cpus"], options["mem_limit"]) == (500_000_000, 64 << 20)
    # the request fields win over the line's flags
    spec = image_spec(command=line, req_cpu=2, req_memory=0.25)
    options = container_options(spec, "w", tmp_path, {})
    assert (options["nano_cpus"], options["mem_limit"]) == (2_000_000_000, GIB // 4)
    # words after the image are the container's command, as with docker run
    spec = image_spec(command="docker run --rm alpine:3 echo hi")
    assert container_options(spec, "w", tmp_path, {})["command"] == ["echo", "hi"]


def test_a_docker_run_line_for_another_image_is_an_ordinary_command(tmp_path: Path) -> None:
    spec = image_spec(command="docker run --rm ubuntu:22.04")
    options = container_options(spec, "w", tmp_path, {})
    assert options["entrypoint"] == ["/bin/sh", "-c"]
    assert options["command"] == ["exec 2>&1\ndocker run --rm ubuntu:22.04"]


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
    assert container.started
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


async def test_a_missing_image_is_not_pulled(tmp_path: Path) -> None:
    import docker.errors

    client = FakeClient()
    client.containers.error = docker.errors.ImageNotFound("No such image: nosuch:1")
    runtime = DockerRuntime("w1", 1024, lambda: client)
    with pytest.raises(RuntimeStartError) as caught:
        await runtime.start(image_spec(docker_image="nosuch:1"), tmp_path, {})
    assert str(caught.value) == (
        "image 'nosuch:1' is not on worker w1's Docker engine, and workers do not pull"
        " images: load it there first (docker pull or docker load)"
    )


async def test_a_container_that_cannot_start_is_removed(tmp_path: Path) -> None:
    import docker.errors

    container = FakeContainer([])
    container.start_error = docker.errors.APIError(
        "400", explanation='exec: "/bin/sh": stat /bin/sh: no such file or directory'
    )
    runtime = DockerRuntime("w1", 1024, lambda: FakeClient(container))
    with pytest.raises(RuntimeStartError, match=r"^cannot run image 'alpine:3': exec: "):
        await runtime.start(image_spec(), tmp_path, {})
    assert container.removed


async def test_an_oom_killed_container_ends_out_of_memory(tmp_path: Path) -> None:
    container = FakeContainer([b"allocating\n"], exit_code=137)
    container.attrs = {"State": {"OOMKilled": True}, "HostConfig": {"Memory": 16 << 20}}
    runtime = DockerRuntime("w1", 1024, lambda: FakeClient(container))
    handle = await runtime.start(image_spec(req_memory=1 / 64), tmp_path, {})
    container.finished.set()
    outcome = await asyncio.wait_for(handle.wait(), 10)
    assert (outcome.exit_code, outcome.reason) == (137, "out of memory")
    assert outcome.detail == "killed by the OOM killer at its memory limit of 16 MiB"
    assert container.removed


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
