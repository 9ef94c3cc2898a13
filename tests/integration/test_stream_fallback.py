"""A real worker against a master without ``StreamHeartbeats`` falls back to unary."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from tests.harness import REPO, child_env, start_worker


@pytest.fixture
async def legacy_master() -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.legacy_master",
        stdout=asyncio.subprocess.PIPE,
        env=child_env(),
        cwd=REPO,
    )
    assert proc.stdout is not None
    first = orjson.loads(await asyncio.wait_for(proc.stdout.readline(), 20))
    yield first["listening"], proc
    proc.kill()
    await proc.wait()


async def next_event(proc: asyncio.subprocess.Process) -> dict[str, object]:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 20)
    assert line, "the legacy master exited"
    return orjson.loads(line)


async def test_worker_uses_unary_heartbeats_with_a_master_without_the_stream(
    legacy_master: tuple[str, asyncio.subprocess.Process], tmp_path: Path
) -> None:
    address, proc = legacy_master
    worker = start_worker(tmp_path, "w1", "--interval", "0.2", master=address)
    try:
        assert await next_event(proc) == {
            "register": "w1",
            "worker_ip": worker.extra["address"],
        }
        beats = [await next_event(proc) for _ in range(5)]
        assert all(event["heartbeat"] == "w1" for event in beats)
        assert all(0.0 <= float(event["cpu_usage"]) <= 100.0 for event in beats)  # type: ignore[arg-type]
        # One refused stream, then unary for the rest of the channel's life.
        assert worker.log().count("has no StreamHeartbeats; using SendHeartbeat") == 1
    finally:
        worker.stop()
