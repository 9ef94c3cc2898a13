"""Subscriptions, event topics and permessage-deflate on a real master process: worker
heartbeats over gRPC (a stub and a real `cloudai worker`), dashboards on aiohttp's
WebSocket client, with and without subscriptions and compression."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import orjson
import pytest

from cloudai.proto import pb, rpc
from tests.harness import Process, start_master, start_worker

WAIT = 15.0


@pytest.fixture
def master(tmp_path: Path) -> Iterator[Process]:
    allowed = [
        arg
        for w in ("gpu-1", "gpu-2", "node-7", "cpu-1")
        for arg in ("--allow-worker", f"{w}=127.0.0.1:9")
    ]
    process = start_master(tmp_path, *allowed, "--allow-worker", "real-1", "--ws-compression")
    yield process
    process.kill()


@pytest.fixture
async def stub(master: Process) -> AsyncIterator[rpc.MasterWorkerStub]:
    async with grpc.aio.insecure_channel(master.extra["grpc"]) as channel:
        yield rpc.MasterWorkerStub(channel)


async def beat(stub: rpc.MasterWorkerStub, worker_id: str, cpu: float) -> None:
    info = pb.WorkerInfo(worker_id=worker_id, worker_ip="127.0.0.1:9", total_cpu=4, total_memory=8)
    assert (await stub.RegisterWorker(info)).success
    hb = pb.Heartbeat(worker_id=worker_id, cpu_usage=cpu, memory_usage=40.0, gpu_usage=cpu / 2)
    assert (await stub.SendHeartbeat(hb)).success


async def next_json(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await asyncio.wait_for(ws.receive(), WAIT)
    assert msg.type is aiohttp.WSMsgType.TEXT, msg
    return orjson.loads(msg.data)


async def until(
    ws: aiohttp.ClientWebSocketResponse, predicate: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    while True:
        message = await next_json(ws)
        if predicate(message):
            return message


def is_event(message: dict[str, Any]) -> bool:
    return isinstance(message.get("topic"), str)


async def test_a_query_subscription_gets_its_workers_and_fields_only(
    master: Process, stub: rpc.MasterWorkerStub
) -> None:
    url = master.extra["ws"] + "/ws/telemetry"
    for worker_id, cpu in (("gpu-1", 10.0), ("node-7", 20.0), ("cpu-1", 30.0)):
        await beat(stub, worker_id, cpu)
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(url) as plain,
        http.ws_connect(url + "?workers=gpu-*,node-7&fields=cpu_usage,gpu_usage") as chosen,
        http.ws_connect(url + "?workers=gpu-*&fields=cpu_usage", compress=15) as zipped,
    ):
        assert plain.compress == 0 and zipped.compress == 15  # deflate negotiated
        full = await next_json(plain)
        assert set(full) == {"gpu-1", "node-7", "cpu-1"} and "memory_usage" in full["gpu-1"]
        assert await next_json(chosen) == {
            "gpu-1": {"worker_id": "gpu-1", "cpu_usage": 10.0, "gpu_usage": 5.0},
            "node-7": {"worker_id": "node-7", "cpu_usage": 20.0, "gpu_usage": 10.0},
        }
        assert await next_json(zipped) == {"gpu-1": {"worker_id": "gpu-1", "cpu_usage": 10.0}}
        await beat(stub, "cpu-1", 31.0)
        await beat(stub, "gpu-1", 11.0)
        assert (await until(chosen, lambda m: "gpu-1" in m))["gpu-1"]["cpu_usage"] == 11.0
        message = await until(zipped, lambda m: m["gpu-1"]["cpu_usage"] == 11.0)
        assert message == {"gpu-1": {"worker_id": "gpu-1", "cpu_usage": 11.0}}
        # The client that asked for nothing still gets today's messages, cpu-1 included.
        await until(plain, lambda m: m.get("cpu-1", {}).get("cpu_usage") == 31.0)


async def test_control_messages_change_the_subscription_and_errors_are_one_frame(
    master: Process, stub: rpc.MasterWorkerStub
) -> None:
    await beat(stub, "gpu-1", 10.0)
    await beat(stub, "node-7", 20.0)
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(master.extra["ws"] + "/ws/telemetry", compress=15) as ws,
    ):
        assert set(await next_json(ws)) == {"gpu-1", "node-7"}
        await ws.send_str('{"subscribe": {"workers": ["node-*"], "fields": ["state"]}}')
        assert await until(ws, is_event) == {
            "topic": "subscription",
            "event": {"workers": ["node-*"], "fields": ["state"], "topics": ["telemetry"]},
        }
        # Then a snapshot of the new choice.
        assert await next_json(ws) == {"node-7": {"worker_id": "node-7", "state": "active"}}
        for bad, code in (
            ("not json", "bad_json"),
            ('{"subscribe": {"workers": ["a/b"]}}', "bad_subscription"),
            ('{"subscribe": {"topics": ["gossip"]}}', "bad_subscription"),
            ('{"resubscribe": {}}', "bad_control"),
            ("x" * 9000, "too_large"),
        ):
            await ws.send_str(bad)
            error = await until(ws, is_event)
            assert error["topic"] == "error" and error["event"]["code"] == code
            assert "\n" not in error["event"]["error"]
        await ws.send_bytes(b"{}")
        assert (await until(ws, is_event))["topic"] == "error"
        # Still served after the errors: the subscription holds.
        await ws.send_str('{"unsubscribe": {"fields": ["*"]}}')
        ack = await until(ws, is_event)
        assert ack["event"]["fields"] == []
        assert await next_json(ws) == {"node-7": {"worker_id": "node-7"}}


async def test_a_bad_query_is_one_error_frame_and_a_policy_close(master: Process) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(master.extra["ws"] + "/ws/telemetry?topics=gossip") as ws,
    ):
        error = await next_json(ws)
        assert error["topic"] == "error" and "unknown topic 'gossip'" in error["event"]["error"]
        msg = await asyncio.wait_for(ws.receive(), WAIT)
        assert msg.type is aiohttp.WSMsgType.CLOSE and ws.close_code == 1008


async def test_one_workers_stream_answers_control_messages_with_an_error(
    master: Process, stub: rpc.MasterWorkerStub
) -> None:
    await beat(stub, "gpu-1", 10.0)
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(master.extra["ws"] + "/ws/telemetry/gpu-1") as ws,
    ):
        assert set(await next_json(ws)) == {"gpu-1"}
        await ws.send_str('{"subscribe": {"topics": ["alerts"]}}')
        error = await until(ws, is_event)
        assert error["topic"] == "error" and "/ws/telemetry" in error["event"]["error"]


async def test_a_real_worker_joining_is_a_transitions_event(
    master: Process, tmp_path: Path
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(master.extra["ws"] + "/ws/telemetry?topics=transitions") as ws,
    ):
        worker = start_worker(tmp_path, "real-1", master=master.extra["grpc"])
        try:
            seen: list[tuple[Any, Any]] = []

            def active(message: dict[str, Any]) -> bool:
                assert is_event(message), message  # no telemetry: not subscribed to it
                event = message["event"]
                if event["worker_id"] == "real-1":
                    seen.append((event["from"], event["to"]))
                return event["to"] == "active"

            await until(ws, active)
            assert seen[-1][1] == "active"
        finally:
            worker.kill()
