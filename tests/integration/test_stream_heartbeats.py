"""The StreamHeartbeats extension against a real master process, and batched fan-out."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import grpc
import orjson
import pytest

from cloudai.proto import pb, rpc
from tests.harness import REPO, Process, async_wait_until, child_env, start_master


@pytest.fixture
def master(tmp_path: Path) -> Iterator[Process]:
    process = start_master(
        tmp_path,
        "--allow-worker",
        "w1",
        "--allow-worker",
        "w2",
        "--inactivity-timeout",
        "1",
        "--ws-batch-ms",
        "250",  # a long tick, so a batch of updates is easy to observe
    )
    yield process
    process.kill()


@pytest.fixture
async def stub(master: Process) -> AsyncIterator[rpc.MasterWorkerStub]:
    async with grpc.aio.insecure_channel(master.extra["grpc"]) as channel:
        yield rpc.MasterWorkerStub(channel)


async def register(stub: rpc.MasterWorkerStub, worker_id: str) -> None:
    ack = await stub.RegisterWorker(pb.WorkerInfo(worker_id=worker_id, worker_ip="127.0.0.1:9"))
    assert ack.success, ack.message


def heartbeat(worker_id: str, cpu: float) -> pb.Heartbeat:
    return pb.Heartbeat(worker_id=worker_id, cpu_usage=cpu, memory_usage=10.0)


async def health(master: Process) -> dict:
    async with aiohttp.ClientSession() as http, http.get(master.extra["http"] + "/health") as r:
        return await r.json()


async def worker_active(master: Process, stub: rpc.MasterWorkerStub, worker_id: str) -> bool:
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{master.extra['ws']}/ws/telemetry/{worker_id}") as ws,
    ):
        snapshot = orjson.loads((await ws.receive()).data)
    return bool(snapshot.get(worker_id, {}).get("is_active"))


async def test_stream_is_accepted_and_answered_once_at_the_end(
    master: Process, stub: rpc.MasterWorkerStub
) -> None:
    await register(stub, "w1")

    async def beats() -> AsyncIterator[pb.Heartbeat]:
        for i in range(20):
            yield heartbeat("w1", float(i))

    ack = await stub.StreamHeartbeats(beats())
    assert ack.success
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(master.extra["ws"] + "/ws/telemetry/w1") as ws,
    ):
        snapshot = orjson.loads((await ws.receive()).data)
    assert snapshot["w1"]["cpu_usage"] == 19.0 and snapshot["w1"]["is_active"] is True


async def test_broken_stream_makes_the_worker_inactive_after_the_timeout(
    master: Process, stub: rpc.MasterWorkerStub
) -> None:
    await register(stub, "w1")
    call = stub.StreamHeartbeats()
    for i in range(3):
        await call.write(heartbeat("w1", float(i)))
    await async_wait_until(lambda: worker_active(master, stub, "w1"), 10, "w1 active")
    # Keep streaming for longer than the timeout: the worker stays active.
    for i in range(8):
        await call.write(heartbeat("w1", float(i)))
        await asyncio.sleep(0.25)
    assert await worker_active(master, stub, "w1")
    call.cancel()  # the stream breaks without an end: no more heartbeats
    await async_wait_until(
        lambda: _not(worker_active(master, stub, "w1")), 10, "w1 inactive after the break"
    )
    assert (await health(master))["active_workers"] == 0
    # The next heartbeat (unary or a new stream) makes it active again.
    await stub.SendHeartbeat(heartbeat("w1", 1.0))
    await async_wait_until(lambda: worker_active(master, stub, "w1"), 10, "w1 active again")


async def _not(value: asyncio.Future[bool] | object) -> bool:
    return not await value  # type: ignore[misc]


async def test_killed_stream_peer_is_noticed_like_a_missed_heartbeat(
    master: Process, stub: rpc.MasterWorkerStub, tmp_path: Path
) -> None:
    """A worker process that dies mid-stream (no END_STREAM, the socket reset)."""
    await register(stub, "w2")
    script = tmp_path / "streamer.py"
    script.write_text(
        "import asyncio, sys, grpc\n"
        "from cloudai.proto import pb, rpc\n"
        "async def main():\n"
        "    async with grpc.aio.insecure_channel(sys.argv[1]) as ch:\n"
        "        call = rpc.MasterWorkerStub(ch).StreamHeartbeats()\n"
        "        i = 0\n"
        "        while True:\n"
        "            await call.write(pb.Heartbeat(worker_id='w2', cpu_usage=i % 100))\n"
        "            i += 1\n"
        "            print('sent', flush=True)\n"
        "            await asyncio.sleep(0.1)\n"
        "asyncio.run(main())\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        master.extra["grpc"],
        stdout=asyncio.subprocess.PIPE,
        env=child_env(),
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        await asyncio.wait_for(proc.stdout.readline(), 20)
        await async_wait_until(lambda: worker_active(master, stub, "w2"), 10, "w2 active")
        proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), 10)
        await async_wait_until(
            lambda: _not(worker_active(master, stub, "w2")), 10, "w2 inactive after the kill"
        )
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (heartbeat("stranger", 1.0), grpc.StatusCode.NOT_FOUND),  # not authorised
        (heartbeat("w2", 1.0), grpc.StatusCode.NOT_FOUND),  # authorised, never registered
        (heartbeat("w1", 150.0), grpc.StatusCode.INVALID_ARGUMENT),  # cpu > 100 %
        (heartbeat("bad id!", 1.0), grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
async def test_stream_with_a_bad_heartbeat_is_refused(
    master: Process, stub: rpc.MasterWorkerStub, bad: pb.Heartbeat, code: grpc.StatusCode
) -> None:
    await register(stub, "w1")

    async def beats() -> AsyncIterator[pb.Heartbeat]:
        yield heartbeat("w1", 5.0)
        yield bad
        yield heartbeat("w1", 6.0)  # never applied: the stream ended at the bad one

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.StreamHeartbeats(beats())
    assert error.value.code() == code
    if code == grpc.StatusCode.NOT_FOUND:
        assert "RegisterWorker" in (error.value.details() or "")
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(master.extra["ws"] + "/ws/telemetry/w1") as ws,
    ):
        snapshot = orjson.loads((await ws.receive()).data)
    assert snapshot["w1"]["cpu_usage"] == 5.0


async def test_one_frame_carries_every_worker_of_a_tick(
    master: Process, stub: rpc.MasterWorkerStub
) -> None:
    await register(stub, "w1")
    await register(stub, "w2")
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(master.extra["ws"] + "/ws/telemetry") as ws,
    ):
        await ws.receive()  # snapshot

        async def beats() -> AsyncIterator[pb.Heartbeat]:
            yield heartbeat("w1", 11.0)
            yield heartbeat("w2", 22.0)
            yield heartbeat("w1", 33.0)  # same tick: the newer state replaces 11.0

        assert (await stub.StreamHeartbeats(beats())).success
        frames: list[dict] = []
        latest: dict[str, float] = {}
        while latest != {"w1": 33.0, "w2": 22.0}:
            frames.append(orjson.loads((await asyncio.wait_for(ws.receive(), 10)).data))
            latest.update({w: s["cpu_usage"] for w, s in frames[-1].items()})
    # One client and three updates is light load: the hub does not wait for its 250 ms
    # tick but sends at the next event-loop iteration (ws_hub.light_load_tick), merging
    # what arrived together; a frame never carries 11.0 after 33.0 (the loop above would
    # not end). Batching under load is unit-tested (tests/unit/master/test_ws_hub.py).
    assert 1 <= len(frames) <= 3
