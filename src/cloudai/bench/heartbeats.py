"""Pre-encoded heartbeats: one template per worker, the tag patched into cpu_usage. Pure.

Protobuf serialises fields in number order, and concatenated encodings merge, so a
heartbeat is ``prefix (worker_id) + cpu_usage (field 2, fixed64) + suffix (the rest)``:
building one costs a ``struct.pack`` and a join instead of a protobuf serialisation.
"""

from __future__ import annotations

import struct

from cloudai.bench.schedule import tag_to_cpu
from cloudai.proto import pb

_CPU_KEY = b"\x11"  # field 2, wire type 1 (64-bit)
_pack_double = struct.Struct("<d").pack


def running_tasks(worker_id: str, count: int) -> list[pb.RunningTask]:
    return [
        pb.RunningTask(
            task_id=f"{worker_id}-t{i}",
            cpu_allocated=1.0,
            memory_allocated=0.5,
            gpu_allocated=0.0,
            status="running",
        )
        for i in range(count)
    ]


class HeartbeatTemplate:
    __slots__ = ("prefix", "suffix")

    def __init__(self, worker_id: str, tasks: int) -> None:
        self.prefix = pb.Heartbeat(worker_id=worker_id).SerializeToString()
        self.suffix = pb.Heartbeat(
            memory_usage=40.0,
            storage_usage=10.0,
            gpu_usage=0.0,
            running_tasks=running_tasks(worker_id, tasks),
        ).SerializeToString()

    def encode(self, tag: int) -> bytes:
        return b"".join((self.prefix, _CPU_KEY, _pack_double(tag_to_cpu(tag)), self.suffix))


def worker_info(worker_id: str, address: str) -> bytes:
    return pb.WorkerInfo(
        worker_id=worker_id,
        worker_ip=address,
        total_cpu=4.0,
        total_memory=8.0,
        total_storage=100.0,
        total_gpu=0.0,
    ).SerializeToString()
