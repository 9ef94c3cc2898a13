"""The worker's gRPC servicer: the master -> worker RPCs of ``cluster.MasterWorker``.

MasterRegister stores the master's address and answers at once; the MasterClient then
registers (RegisterWorker) and starts heartbeats: join flow (1). AssignTask answers at
once and runs the task in the background; before any master is known it answers like
the existing Go worker ("Master not registered yet"). The worker -> master RPCs are
left to the generated base class, which answers UNIMPLEMENTED.
"""

from __future__ import annotations

import logging
from typing import Protocol

import grpc

from cloudai.addresses import is_wildcard, join_host_port, split_host_port
from cloudai.proto import pb, rpc
from cloudai.worker.tasks import TaskManager

log = logging.getLogger(__name__)

MASTER_NOT_REGISTERED = "Master not registered yet"


class MasterLink(Protocol):
    @property
    def master_known(self) -> bool: ...

    def set_master(self, address: str) -> None: ...


def peer_host(peer: str) -> str | None:
    """The host of a gRPC peer string: "ipv4:1.2.3.4:5", "ipv6:[::1]:5"."""
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6") or not rest:
        return None
    try:
        host, _port = split_host_port(rest)
    except ValueError:
        return None
    return host


def master_address_from(info: pb.MasterInfo, peer: str) -> str:
    """The master's reachable address; a wildcard host is replaced by the caller's IP.

    Raises ValueError with a clear message when the address is unusable.
    """
    if not info.master_address:
        raise ValueError("MasterInfo.master_address is empty")
    host, port = split_host_port(info.master_address)
    if is_wildcard(host):
        caller = peer_host(peer)
        if caller is None:
            raise ValueError(
                f"master_address {info.master_address!r} is a wildcard and the caller's"
                " address is unknown"
            )
        host = caller
    if port == 0:
        raise ValueError(f"master_address {info.master_address!r} has port 0")
    return join_host_port(host, port)


class WorkerService(rpc.MasterWorkerServicer):
    def __init__(self, worker_id: str, tasks: TaskManager, master: MasterLink) -> None:
        self.worker_id = worker_id
        self._tasks = tasks
        self._master = master

    async def MasterRegister(
        self, request: pb.MasterInfo, context: grpc.aio.ServicerContext
    ) -> pb.RegisterAck:
        try:
            address = master_address_from(request, context.peer())
        except ValueError as exc:
            log.warning("refused MasterRegister from %s: %s", context.peer(), exc)
            return pb.RegisterAck(success=False, message=f"invalid MasterInfo: {exc}")
        log.info("master %s (%s) registered this worker", request.master_id or "?", address)
        self._master.set_master(address)
        return pb.RegisterAck(
            success=True, message=f"worker {self.worker_id} registered master {address}"
        )

    async def AssignTask(self, request: pb.Task, context: grpc.aio.ServicerContext) -> pb.TaskAck:
        if not self._master.master_known:
            return pb.TaskAck(success=False, message=MASTER_NOT_REGISTERED)
        ok, message = await self._tasks.assign(request)
        return pb.TaskAck(success=ok, message=message)

    async def CancelTask(self, request: pb.TaskID, context: grpc.aio.ServicerContext) -> pb.TaskAck:
        ok, message = await self._tasks.cancel(request.task_id)
        return pb.TaskAck(success=ok, message=message)
