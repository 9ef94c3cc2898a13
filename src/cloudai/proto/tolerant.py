"""Serving ``cluster.MasterWorker`` with deserializers that never raise.

grpcio logs a request it cannot parse as an "unexpected" error with a full traceback,
once per message, and answers UNKNOWN: a sender of garbage could fill the disk. Here a
request that does not parse becomes an ``Undecodable`` value instead, which the
servicer answers with INVALID_ARGUMENT, counts, and logs once per peer a minute.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message

from cloudai.proto import SERVICE_NAME, pb


class Undecodable:
    """A request whose bytes are not the message its method expects."""

    __slots__ = ("error", "message_name")

    def __init__(self, message_name: str, error: str) -> None:
        self.message_name = message_name
        self.error = error

    def describe(self) -> str:
        return f"not a valid {self.message_name}: {self.error}"


def tolerant(message_type: type[Message]) -> Callable[[bytes], Any]:
    """``message_type.FromString`` that returns an Undecodable instead of raising."""
    parse = message_type.FromString
    name = message_type.DESCRIPTOR.full_name

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError as exc:
            return Undecodable(name, str(exc))

    return deserialize


def _register(
    server: grpc.aio.Server | grpc.Server, handlers: dict[str, grpc.RpcMethodHandler]
) -> None:
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))


def add_master_rpcs(
    servicer: Any, server: grpc.aio.Server | grpc.Server, *, streams: bool = True
) -> None:
    """The worker -> master RPCs of ``cluster.MasterWorker`` (what a master serves). The
    others are not registered: gRPC answers them UNIMPLEMENTED without a log line. Without
    ``streams`` (the synchronous server) StreamHeartbeats is not registered either."""
    unary = grpc.unary_unary_rpc_method_handler
    handlers: dict[str, grpc.RpcMethodHandler] = {
        "RegisterWorker": unary(
            servicer.RegisterWorker,
            request_deserializer=tolerant(pb.WorkerInfo),
            response_serializer=pb.RegisterAck.SerializeToString,
        ),
        "SendHeartbeat": unary(
            servicer.SendHeartbeat,
            request_deserializer=tolerant(pb.Heartbeat),
            response_serializer=pb.HeartbeatAck.SerializeToString,
        ),
        "ReportTaskCompletion": unary(
            servicer.ReportTaskCompletion,
            request_deserializer=tolerant(pb.TaskResult),
            response_serializer=pb.Ack.SerializeToString,
        ),
        "AppendTaskOutput": unary(
            servicer.AppendTaskOutput,
            request_deserializer=tolerant(pb.TaskOutput),
            response_serializer=pb.TaskOutputAck.SerializeToString,
        ),
    }
    if streams:
        handlers["StreamHeartbeats"] = grpc.stream_unary_rpc_method_handler(
            servicer.StreamHeartbeats,
            request_deserializer=tolerant(pb.Heartbeat),
            response_serializer=pb.HeartbeatAck.SerializeToString,
        )
    _register(server, handlers)


def add_worker_rpcs(servicer: Any, server: grpc.aio.Server) -> None:
    """The master -> worker RPCs of ``cluster.MasterWorker`` (what a worker serves)."""
    unary = grpc.unary_unary_rpc_method_handler
    _register(
        server,
        {
            "MasterRegister": unary(
                servicer.MasterRegister,
                request_deserializer=tolerant(pb.MasterInfo),
                response_serializer=pb.RegisterAck.SerializeToString,
            ),
            "AssignTask": unary(
                servicer.AssignTask,
                request_deserializer=tolerant(pb.Task),
                response_serializer=pb.TaskAck.SerializeToString,
            ),
            "CancelTask": unary(
                servicer.CancelTask,
                request_deserializer=tolerant(pb.TaskID),
                response_serializer=pb.TaskAck.SerializeToString,
            ),
        },
    )
