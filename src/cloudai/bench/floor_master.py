"""The floor: a gRPC server that speaks the protocol and does nothing else.

It accepts ``RegisterWorker`` and ``SendHeartbeat`` at once and reads
``StreamHeartbeats`` to the end, with the master's gRPC options, uvloop and grpc.aio,
so a bench run against it (``cloudai bench --target floor``) measures what grpcio
itself costs for a load: the part of the master's CPU and memory that is not ours.
Run as ``python -m cloudai.bench.floor_master --ready-file F``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from cloudai.proto import pb, rpc
from cloudai.proto.options import grpc_server_options
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


async def serve(ready_file: Path) -> None:
    server = grpc.aio.server(options=grpc_server_options(MAX_MESSAGE_BYTES))
    rpc.add_MasterWorkerServicer_to_server(FloorServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    tmp = ready_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"grpc_port": port, "pid": os.getpid()}))
    tmp.replace(ready_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ready-file", type=Path, required=True)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.ready_file))
    else:
        uvloop.run(serve(args.ready_file))


if __name__ == "__main__":
    main()
