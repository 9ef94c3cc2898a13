"""WorkerLink: the master's calls to workers (MasterRegister, AssignTask, CancelTask).

One cached grpc.aio channel per worker address. After an admin authorises a worker,
the master calls its MasterRegister and keeps retrying with back-off until the worker
answers (the existing master tried once; a worker started later never heard from it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc

from cloudai.addresses import is_wildcard, join_host_port, local_address_towards, split_host_port
from cloudai.backoff import Backoff
from cloudai.master.registry import WorkerRegistry
from cloudai.proto import pb, rpc
from cloudai.security.pki import worker_dns_name

log = logging.getLogger(__name__)

CALL_TIMEOUT = 5.0


class WorkerUnavailable(RuntimeError):
    pass


class WorkerLink:
    def __init__(
        self,
        registry: WorkerRegistry,
        *,
        master_id: str,
        grpc_port: int,
        advertise_host: str | None,
        max_message_bytes: int,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        """``credentials``: the master's certificate for calls to workers (secure mode);
        None: plaintext, the Go protocol."""
        self._registry = registry
        self._credentials = credentials
        self._master_id = master_id
        self.grpc_port = grpc_port
        self._advertise_host = advertise_host
        self._max_message_bytes = max_message_bytes
        self._channels: dict[tuple[str, str], grpc.aio.Channel] = {}
        self._registering: dict[str, asyncio.Task[None]] = {}
        self._closed = False

    def master_address_for(self, worker_address: str) -> str:
        """An address of this master that the worker can reach (never a wildcard)."""
        host = self._advertise_host
        if not host or is_wildcard(host):
            worker_host, worker_port = split_host_port(worker_address)
            host = local_address_towards(worker_host, worker_port)
        return join_host_port(host, self.grpc_port)

    def _stub(self, worker_id: str, address: str) -> rpc.MasterWorkerStub:
        key = (worker_id, address)
        channel = self._channels.get(key)
        if channel is None:
            options: list[tuple[str, int | str]] = [
                ("grpc.max_receive_message_length", self._max_message_bytes),
                ("grpc.max_send_message_length", self._max_message_bytes),
                ("grpc.keepalive_time_ms", 30_000),
            ]
            if self._credentials is None:
                channel = grpc.aio.insecure_channel(address, options=options)
            else:  # only this worker's certificate names it: not another worker's
                options.append(("grpc.ssl_target_name_override", worker_dns_name(worker_id)))
                channel = grpc.aio.secure_channel(address, self._credentials, options)
            self._channels[key] = channel
        return rpc.MasterWorkerStub(channel)

    def _address(self, worker_id: str) -> str:
        entry = self._registry.get(worker_id)
        if entry is None:
            raise WorkerUnavailable(f"unknown worker {worker_id!r}")
        if not entry.address:
            raise WorkerUnavailable(f"the address of worker {worker_id!r} is not known yet")
        return entry.address

    # -- MasterRegister ---------------------------------------------------------------------

    async def master_register(self, worker_id: str) -> tuple[bool, str]:
        """One MasterRegister call; (success, message)."""
        address = self._address(worker_id)
        info = pb.MasterInfo(
            master_id=self._master_id, master_address=self.master_address_for(address)
        )
        try:
            ack = await self._stub(worker_id, address).MasterRegister(info, timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            return False, f"{exc.code().name}: {exc.details()}"
        return ack.success, ack.message

    def connect(self, worker_id: str) -> None:
        """Call the worker's MasterRegister in the background until it answers."""
        if self._closed:
            return
        task = self._registering.get(worker_id)
        if task is not None and not task.done():
            task.cancel()
        self._registering[worker_id] = asyncio.get_running_loop().create_task(
            self._register_until_answered(worker_id), name=f"master-register-{worker_id}"
        )

    async def _register_until_answered(self, worker_id: str) -> None:
        backoff = Backoff(initial=0.5, maximum=15.0)
        reported = False
        while worker_id in self._registry and not self._registry.has_session(worker_id):
            try:
                ok, message = await self.master_register(worker_id)
            except WorkerUnavailable as exc:
                log.info("not calling MasterRegister: %s", exc)
                return
            if ok:
                log.info("worker %s answered MasterRegister: %s", worker_id, message)
                return
            if not reported:
                log.info("worker %s not reachable yet (%s); retrying", worker_id, message)
                reported = True
            await asyncio.sleep(backoff.next_delay())

    # -- tasks ------------------------------------------------------------------------------

    async def assign_task(self, worker_id: str, task: pb.Task) -> pb.TaskAck:
        return await self._call(worker_id, "AssignTask", task)

    async def cancel_task(self, worker_id: str, task_id: str) -> pb.TaskAck:
        return await self._call(worker_id, "CancelTask", pb.TaskID(task_id=task_id))

    async def _call(self, worker_id: str, method: str, request: object) -> pb.TaskAck:
        stub = self._stub(worker_id, self._address(worker_id))
        try:
            ack: pb.TaskAck = await getattr(stub, method)(request, timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            raise WorkerUnavailable(
                f"worker {worker_id} did not answer {method}: {exc.code().name}: {exc.details()}"
            ) from None
        return ack

    async def close(self) -> None:
        self._closed = True
        tasks = list(self._registering.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await asyncio.gather(*(ch.close() for ch in self._channels.values()))
        self._channels.clear()
