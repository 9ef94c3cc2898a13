"""The load generator's HTTP/2 client against a reference server: a real grpc.aio one.

The client must speak gRPC as grpcio understands it (headers, length-prefixed messages,
trailers, flow control, MAX_CONCURRENT_STREAMS, GOAWAY), not merely as its own frame
code does. Loopback sockets, one in-process server per test.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc

from cloudai.bench import h2client
from cloudai.bench.heartbeats import HeartbeatTemplate, worker_info
from cloudai.proto import pb, rpc
from tests.harness import async_wait_until

SERVICE = "/cluster.MasterWorker/"


class Servicer(rpc.MasterWorkerServicer):
    def __init__(self) -> None:
        self.heartbeats = 0
        self.running = 0
        self.max_running = 0
        self.streamed: list[pb.Heartbeat] = []
        self.stream_open = asyncio.Event()

    async def RegisterWorker(
        self, request: pb.WorkerInfo, context: grpc.aio.ServicerContext
    ) -> pb.RegisterAck:
        if request.worker_id == "refused":
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "not on the list: refused")
        return pb.RegisterAck(success=True, message=f"hello {request.worker_id}")

    async def SendHeartbeat(
        self, request: pb.Heartbeat, context: grpc.aio.ServicerContext
    ) -> pb.HeartbeatAck:
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        await asyncio.sleep(0)  # let other calls in: the limit must hold meanwhile
        self.running -= 1
        self.heartbeats += 1
        return pb.HeartbeatAck(success=True)

    async def StreamHeartbeats(
        self, request_iterator: AsyncIterator[pb.Heartbeat], context: grpc.aio.ServicerContext
    ) -> pb.HeartbeatAck:
        self.stream_open.set()
        async for heartbeat in request_iterator:
            self.streamed.append(heartbeat)
        return pb.HeartbeatAck(success=True)


@dataclass
class Answers:
    got: dict[Any, tuple[bool, bytes | None, str]] = field(default_factory=dict)

    def __call__(self, token: Any, ok: bool, message: bytes | None, error: str) -> None:
        assert token not in self.got, f"answered twice: {token}"
        self.got[token] = (ok, message, error)


async def start_server(
    servicer: Servicer, options: list[tuple[str, Any]] | None = None
) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(options=options or [])
    rpc.add_MasterWorkerServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def test_unary_calls_and_a_refusal() -> None:
    servicer = Servicer()
    server, port = await start_server(servicer)
    answers = Answers()
    conn = await h2client.connect("127.0.0.1", port, answers)
    try:
        headers = conn.request_headers(SERVICE + "RegisterWorker")
        for worker_id in ("w1", "w2", "refused"):
            conn.unary(headers, worker_info(worker_id, "127.0.0.1:9"), worker_id)
        await async_wait_until(lambda: len(answers.got) == 3, what="three answers")
        for worker_id in ("w1", "w2"):
            ok, message, error = answers.got[worker_id]
            assert ok and error == ""
            assert pb.RegisterAck.FromString(message or b"").message == f"hello {worker_id}"
        ok, message, error = answers.got["refused"]
        assert not ok and message is None
        assert error == "grpc-status 7: not on the list: refused"
        assert conn.in_flight == 0
    finally:
        conn.close()
        await server.stop(None)


async def test_calls_beyond_max_concurrent_streams_wait_their_turn() -> None:
    """The client queues calls over the server's MAX_CONCURRENT_STREAMS. grpc-core may
    still refuse a few streams (RST_STREAM REFUSED_STREAM: it counts a stream until its
    call is torn down, after the client saw it end); a refused stream was not processed
    and is retried, as grpcio's own clients do."""
    servicer = Servicer()
    server, port = await start_server(servicer, [("grpc.max_concurrent_streams", 4)])
    answers = Answers()
    conn = await h2client.connect("127.0.0.1", port, answers)
    try:
        headers = conn.request_headers(SERVICE + "SendHeartbeat")
        template = HeartbeatTemplate("w1", 2)
        todo = list(range(1, 301))
        for _attempt in range(10):
            for tag in todo:
                answers.got.pop(tag, None)
                conn.unary(headers, template.encode(tag), tag)
            assert conn.in_flight == len(todo)
            await async_wait_until(lambda: conn.in_flight == 0, timeout=30, what="answers")
            refused = [t for t in todo if answers.got[t][2].endswith("(code 7)")]
            if not refused:
                break
            todo = refused
        ack = pb.HeartbeatAck(success=True).SerializeToString()
        assert sorted(answers.got) == list(range(1, 301))
        assert all(ok and message == ack for ok, message, _e in answers.got.values())
        assert servicer.heartbeats == 300 and servicer.max_running <= 4
    finally:
        conn.close()
        await server.stop(None)


async def test_client_stream_through_flow_control_and_frame_limits() -> None:
    """Heartbeats and 100 KB messages (over the 16 KiB frame and 64 KiB window limits)
    on one stream: every message arrives, in order, and the call ends OK."""
    servicer = Servicer()
    server, port = await start_server(servicer)
    answers = Answers()
    conn = await h2client.connect("127.0.0.1", port, answers)
    try:
        stream = conn.open_stream(conn.request_headers(SERVICE + "StreamHeartbeats"), "s")
        template = HeartbeatTemplate("w1", 1)
        big = pb.Heartbeat(worker_id="big-" + "x" * 100_000).SerializeToString()
        sent = []
        for tag in range(1, 2001):
            message = big if tag % 250 == 0 else template.encode(tag)
            assert conn.send(stream, message)
            sent.append(message)
        conn.end_stream(stream)
        await async_wait_until(lambda: "s" in answers.got, timeout=30, what="the stream's answer")
        assert answers.got["s"][0], answers.got["s"]
        assert [h.SerializeToString() for h in servicer.streamed] == sent
        assert conn.backlog == 0 and conn.in_flight == 0
        assert not conn.send(stream, template.encode(1))  # the call is over
    finally:
        conn.close()
        await server.stop(None)


async def test_server_shutdown_fails_open_calls() -> None:
    servicer = Servicer()
    server, port = await start_server(servicer)
    answers = Answers()
    conn = await h2client.connect("127.0.0.1", port, answers)
    stream = conn.open_stream(conn.request_headers(SERVICE + "StreamHeartbeats"), "s")
    assert conn.send(stream, HeartbeatTemplate("w1", 0).encode(1))
    await asyncio.wait_for(servicer.stream_open.wait(), 10)
    await server.stop(None)  # cancels the handler, closes the connection
    await async_wait_until(lambda: "s" in answers.got, what="the stream's failure")
    ok, _message, error = answers.got["s"]
    assert not ok and error
    await asyncio.wait_for(conn.closed, 10)
    conn.unary(conn.request_headers(SERVICE + "SendHeartbeat"), b"", "late")
    assert answers.got["late"][0] is False
