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
from cloudai.proto.tolerant import Undecodable
from cloudai.security.limiter import LogOnce
from cloudai.security.peers import PeerCertificates
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
    def __init__(
        self, worker_id: str, tasks: TaskManager, master: MasterLink, master_only: bool = False
    ) -> None:
        """``master_only`` (secure mode): every call must come with the master's
        certificate (TLS already checked it was signed by the CA this worker pinned)."""
        self.worker_id = worker_id
        self._tasks = tasks
        self._master = master
        self._peers = PeerCertificates() if master_only else None
        self._refusals = LogOnce(60.0)
        self.refused_calls = 0

    async def _check_call(
        self, context: grpc.aio.ServicerContext, what: str, request: object
    ) -> None:
        """Refuse garbage (INVALID_ARGUMENT, no traceback) and, in secure mode, any caller
        but the master; one log line per peer a minute."""
        if request.__class__ is Undecodable:
            assert isinstance(request, Undecodable)
            self.refused_calls += 1
            if self._refusals.allow(context.peer()) is not None:
                log.warning("refused %s from %s: %s", what, context.peer(), request.describe())
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.describe())
        await self._require_master(context, what)

    async def _require_master(self, context: grpc.aio.ServicerContext, what: str) -> None:
        if self._peers is None:
            return
        caller = self._peers.of(context)
        if caller is not None and caller.role == "master":
            return
        self.refused_calls += 1
        who = "no certificate" if caller is None else f"the certificate of {caller.describe()}"
        message = f"{what} is taken only from this worker's master, not from {who}"
        if self._refusals.allow(context.peer()) is not None:
            log.warning("refused %s from %s: %s", what, context.peer(), message)
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, message)

    async def MasterRegister(
        self, request: pb.MasterInfo, context: grpc.aio.ServicerContext
    ) -> pb.RegisterAck:
        await self._check_call(context, "MasterRegister", request)
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
        await self._check_call(context, "AssignTask", request)
        if not self._master.master_known:
            return pb.TaskAck(success=False, message=MASTER_NOT_REGISTERED)
        ok, message = await self._tasks.assign(request)
        return pb.TaskAck(success=ok, message=message)

    async def CancelTask(self, request: pb.TaskID, context: grpc.aio.ServicerContext) -> pb.TaskAck:
        await self._check_call(context, "CancelTask", request)
        ok, message = await self._tasks.cancel(request.task_id)
        return pb.TaskAck(success=ok, message=message)
