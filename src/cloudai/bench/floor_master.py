"""The floor: a gRPC server that speaks the protocol and does nothing else.

It accepts ``RegisterWorker`` and ``SendHeartbeat`` at once and reads
``StreamHeartbeats`` to the end, with the master's gRPC options, uvloop and grpc.aio,
so a bench run against it (``cloudai bench --target floor``) measures what grpcio
itself costs for a load: the part of the master's CPU and memory that is not ours.
With ``--server sync`` it is a synchronous ``grpc.server`` on a thread pool of the
master's size instead (unary calls only, as our master's ``--grpc-server sync``).
Run as ``python -m cloudai.bench.floor_master --ready-file F [--server sync]``.
``CLOUDAI_FLOOR_GRPC_OPTIONS="name=INT,name=INT"`` adds or replaces channel options (to
measure what an option changes before the master gets it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import threading
from collections.abc import AsyncIterator
from concurrent import futures
from pathlib import Path

import grpc

from cloudai.proto import pb, rpc
from cloudai.proto.options import (
    SYNC_SERVER_MAX_CALLS,
    SYNC_SERVER_THREADS,
    grpc_server_options,
)
from cloudai.validation import MAX_MESSAGE_BYTES


class FloorServicer(rpc.MasterWorkerServicer):
    async def RegisterWorker(self, request: pb.WorkerInfo, context: object) -> pb.RegisterAck:
        return pb.RegisterAck(success=True, message="registered")

    async def SendHeartbeat(self, request: pb.Heartbeat, context: object) -> pb.HeartbeatAck:
        return pb.HeartbeatAck(success=True)

    async def StreamHeartbeats(
        self, request_iterator: AsyncIterator[pb.Heartbeat], context: object
    ) -> pb.HeartbeatAck:
        async for _ in request_iterator:
            pass
        return pb.HeartbeatAck(success=True)


class SyncFloorServicer(rpc.MasterWorkerServicer):
    """The same on a synchronous server: each call runs in a pool thread."""

    def RegisterWorker(self, request: pb.WorkerInfo, context: object) -> pb.RegisterAck:
        return pb.RegisterAck(success=True, message="registered")

    def SendHeartbeat(self, request: pb.Heartbeat, context: object) -> pb.HeartbeatAck:
        return pb.HeartbeatAck(success=True)


def floor_options() -> list[tuple[str, int]]:
    """The master's options, with ``CLOUDAI_FLOOR_GRPC_OPTIONS`` added or replacing."""
    options = dict(grpc_server_options(MAX_MESSAGE_BYTES))
    for item in os.environ.get("CLOUDAI_FLOOR_GRPC_OPTIONS", "").split(","):
        name, _, value = item.strip().partition("=")
        if name:
            options[name] = int(value)
    return list(options.items())


def _ready(ready_file: Path, port: int) -> None:
    tmp = ready_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"grpc_port": port, "pid": os.getpid()}))
    tmp.replace(ready_file)


def serve_sync(ready_file: Path) -> None:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=SYNC_SERVER_THREADS),
        options=floor_options(),
        maximum_concurrent_rpcs=SYNC_SERVER_MAX_CALLS,
    )
    rpc.add_MasterWorkerServicer_to_server(SyncFloorServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    _ready(ready_file, port)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass
    server.stop(1.0).wait()


async def serve(ready_file: Path) -> None:
    server = grpc.aio.server(options=floor_options())
    rpc.add_MasterWorkerServicer_to_server(FloorServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    _ready(ready_file, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ready-file", type=Path, required=True)
    parser.add_argument("--server", choices=("aio", "sync"), default="aio")
    args = parser.parse_args()
    if args.server == "sync":
        serve_sync(args.ready_file)
        return
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.ready_file))
    else:
        uvloop.run(serve(args.ready_file))


if __name__ == "__main__":
    main()
