"""WorkerNode: builds the worker's components from WorkerSettings and runs them.

Start-up: work directory (locked: one worker per directory), samplers and machine
totals, result spool, runtimes, TaskManager, MasterClient, gRPC server on the first
free port. Graceful stop (SIGTERM/SIGINT): stop heartbeats, wait for running tasks up
to the drain timeout and cancel the rest, deliver pending results (what cannot be
delivered stays on disk for the next start), stop the gRPC server.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import random
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import grpc
import psutil

from cloudai.addresses import is_wildcard, join_host_port, local_address_towards, split_host_port
from cloudai.proto import pb
from cloudai.proto.tolerant import add_worker_rpcs
from cloudai.security.credentials import WorkerIdentity, load_worker, save_worker
from cloudai.worker.cgroups import MODE_ACCOUNTED, CgroupLimits, owner_name, setup_limits
from cloudai.worker.client import MasterClient
from cloudai.worker.gpu import NvmlGpuProvider
from cloudai.worker.heartbeat import build_heartbeat
from cloudai.worker.join import JoinError, join_cluster
from cloudai.worker.output_stream import OutputStreams
from cloudai.worker.results_spool import ResultSpool
from cloudai.worker.runtimes.docker import ClientFactory, DockerRuntime, default_client_factory
from cloudai.worker.runtimes.process import ProcessRuntime
from cloudai.worker.samplers import GpuProvider, MachineTotals, SystemSampler
from cloudai.worker.service import WorkerService
from cloudai.worker.settings import WorkerSettings
from cloudai.worker.tasks import TaskManager

log = logging.getLogger(__name__)

_PRIMARY_ROUTE_PROBE = "192.0.2.1"  # TEST-NET-1: only used to pick the outgoing interface


class WorkerStartError(RuntimeError):
    """The worker cannot start (port, work directory ...); the message says why."""


def _port_is_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    bind_host = "" if is_wildcard(host) else host
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((bind_host, port))
        except OSError:
            return False
    return True


def bind_first_free(
    server: grpc.aio.Server,
    host: str,
    first: int,
    tries: int,
    credentials: grpc.ServerCredentials | None = None,
) -> int:
    """Bind ``server`` to the first free port from ``first`` (0: any free port); with
    ``credentials`` a TLS port, else plaintext."""
    if first == 0:
        candidates: range = range(0, 1)
    else:
        candidates = range(first, min(65536, first + max(1, tries)))
    for port in candidates:
        if port and not _port_is_free(host, port):
            continue
        try:
            address = join_host_port(host, port)
            if credentials is None:
                bound = server.add_insecure_port(address)
            else:
                bound = server.add_secure_port(address, credentials)
        except RuntimeError:  # lost a race for the port
            continue
        if bound:
            return int(bound)
    last = candidates[-1]
    raise WorkerStartError(f"no free port for gRPC on {host} in {first}..{last}")


class WorkerNode:
    def __init__(
        self,
        settings: WorkerSettings,
        *,
        gpu: GpuProvider | None = None,
        psutil_module: Any = psutil,
        docker_client_factory: ClientFactory | None = default_client_factory,
        rng: Callable[[], float] = random.random,
    ) -> None:
        settings.check()
        self.settings = settings
        self.worker_id = settings.worker_id
        self.work_dir = settings.resolved_work_dir()
        self._gpu = gpu
        self._psutil = psutil_module
        self._docker_factory = docker_client_factory if settings.docker_enabled else None
        self._rng = rng
        self.port: int | None = None
        self.totals: MachineTotals | None = None
        self.sampler: SystemSampler | None = None
        self.spool: ResultSpool | None = None
        self.tasks: TaskManager | None = None
        self.client: MasterClient | None = None
        self.output: OutputStreams | None = None  # live task output (docs/TASK_OUTPUT.md)
        self.service: WorkerService | None = None
        self.docker: DockerRuntime | None = None
        self.limits: CgroupLimits | None = None
        self.task_limits = MODE_ACCOUNTED  # WorkerInfo.task_limits, once started
        self._server: grpc.aio.Server | None = None
        self._lock_file: IO[str] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._stopped = False
        self._hurry = asyncio.Event()  # a second signal: cancel running tasks now

    # -- addresses --------------------------------------------------------------------------

    def advertised_host(self, towards: str | None = None) -> str:
        """Our IP as seen from ``towards`` ("host:port" of a master), or in general."""
        settings = self.settings
        if settings.advertise_host:
            return settings.advertise_host
        if not is_wildcard(settings.listen_host):
            return settings.listen_host
        if towards:
            with contextlib.suppress(ValueError):
                host, port = split_host_port(towards)
                return local_address_towards(host, port)
        return local_address_towards(_PRIMARY_ROUTE_PROBE)

    @property
    def address(self) -> str:
        """The "ip:port" a master should use to reach this worker."""
        assert self.port is not None, "not started"
        towards = self.client.master_address if self.client else self.settings.master_address
        return join_host_port(self.advertised_host(towards), self.port)

    def registration_line(self) -> str:
        """The master CLI line that authorises this worker (join flow 1)."""
        return f"register {self.worker_id} {self.address}"

    # -- providers for the client -----------------------------------------------------------

    def worker_info(self, master_address: str) -> pb.WorkerInfo:
        assert self.totals is not None and self.port is not None
        return pb.WorkerInfo(
            worker_id=self.worker_id,
            worker_ip=join_host_port(self.advertised_host(master_address), self.port),
            total_cpu=self.totals.cpu_cores,
            total_memory=self.totals.memory_gb,
            total_storage=self.totals.storage_gb,
            total_gpu=self.totals.gpu_count,
            task_limits=self.task_limits,
        )

    async def heartbeat(self) -> pb.Heartbeat:
        assert self.sampler is not None and self.tasks is not None
        sample = await asyncio.to_thread(self.sampler.sample)
        await self.tasks.sample_usage()
        return build_heartbeat(self.worker_id, sample, self.tasks.running_tasks())

    # -- start ------------------------------------------------------------------------------

    def _lock_work_dir(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        lock_path = self.work_dir / "worker.lock"
        handle = open(lock_path, "a+")  # noqa: SIM115 - held until stop()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            raise WorkerStartError(
                f"work directory {self.work_dir} is in use by another worker (pid {holder});"
                " give each worker its own --work-dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._lock_file = handle

    async def start(self) -> None:
        settings = self.settings
        self._lock_work_dir()
        try:
            await self._start_components(settings)
        except BaseException:
            await self._release()
            raise

    async def _identity(self, settings: WorkerSettings) -> WorkerIdentity | None:
        """Secure mode: the certificate kept from joining, or a join with the token."""
        if settings.insecure:
            log.warning(
                "--insecure: plaintext gRPC, no certificates; anyone who reaches %s can "
                "give this worker tasks. Use it only with a Go master.",
                settings.listen_host,
            )
            return None
        kept = await asyncio.to_thread(load_worker, self.work_dir, self.worker_id)
        if kept is not None:
            return kept
        if not settings.join_token or not settings.master_address:
            raise WorkerStartError(
                "this worker has not joined a cluster yet: start it with --master HOST:PORT "
                "--join TOKEN (on the master: cloudai token create), or --insecure for a Go "
                "master"
            )
        try:
            identity = await join_cluster(
                settings.master_address, settings.join_token, self.worker_id
            )
        except JoinError as exc:
            raise WorkerStartError(str(exc)) from None
        await asyncio.to_thread(save_worker, self.work_dir, identity)
        log.info("joined the cluster of %s as %s", settings.master_address, self.worker_id)
        return identity

    async def _start_components(self, settings: WorkerSettings) -> None:
        identity = await self._identity(settings)
        gpu = self._gpu if self._gpu is not None else NvmlGpuProvider()
        self._gpu = gpu
        self.sampler = SystemSampler(self.work_dir, gpu, self._psutil)
        self.totals = await asyncio.to_thread(self.sampler.totals)
        self.spool = ResultSpool(self.work_dir / "results")
        pending = len(self.spool)
        if pending:
            log.info("%d task result(s) from an earlier run wait for delivery", pending)
        self.docker = DockerRuntime(self.worker_id, settings.max_log_bytes, self._docker_factory)
        limits = await asyncio.to_thread(
            setup_limits, settings.task_limits, owner_name(self.worker_id, self.work_dir)
        )
        self.limits, self.task_limits = limits.limits, limits.mode
        log.info("task limits: %s", limits.description)
        self.client = MasterClient(
            settings,
            self.worker_info,
            self.heartbeat,
            self.spool,
            self._rng,
            credentials=identity.channel_credentials() if identity else None,
        )
        self.output = OutputStreams(
            self.worker_id, self.client.append_output, settings.task_output_max_bytes
        )
        self.client.before_result = self.output.before_result
        self.tasks = TaskManager(
            self.worker_id,
            self.totals,
            self.work_dir,
            self.spool,
            ProcessRuntime(settings.max_log_bytes, settings.kill_grace, limits=self.limits),
            self.docker,
            kill_grace=settings.kill_grace,
            max_log_bytes=settings.max_log_bytes,
            storage_free_gb=self.sampler.storage_free_gb,
            on_result=self.client.notify_result,
            output=self.output,
        )
        self.service = WorkerService(
            self.worker_id, self.tasks, self.client, master_only=identity is not None
        )
        await self.tasks.recover_interrupted()

        server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 0),  # two workers must not share a port
                ("grpc.max_receive_message_length", settings.max_message_bytes),
                ("grpc.max_send_message_length", settings.max_message_bytes),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
            ]
        )
        add_worker_rpcs(self.service, server)
        self.port = bind_first_free(
            server,
            settings.listen_host,
            settings.port,
            settings.port_search,
            identity.server_credentials() if identity else None,
        )
        await server.start()
        self._server = server

        self.client.start()
        if settings.master_address:
            self.client.set_master(settings.master_address)
        self._spawn(self._check_docker())
        t = self.totals
        log.info(
            "worker %s serving gRPC on %s (reachable at %s); %g cores, %.1f GiB memory,"
            " %.1f GiB storage, %g GPUs; work dir %s",
            self.worker_id,
            join_host_port(settings.listen_host, self.port),
            self.address,
            t.cpu_cores,
            t.memory_gb,
            t.storage_gb,
            t.gpu_count,
            self.work_dir,
        )

    async def _check_docker(self) -> None:
        assert self.docker is not None
        problem = await asyncio.to_thread(self.docker.engine_problem)
        if problem is None:
            log.info("Docker engine reachable: tasks with an image run as containers")
        else:
            log.info("Docker runtime unavailable (%s): tasks with an image are refused", problem)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def write_ready_file(self, path: Path) -> None:
        """Tell a supervisor (or a test) where we listen, atomically."""
        data = {
            "worker_id": self.worker_id,
            "address": self.address,
            "port": self.port,
            "pid": os.getpid(),
            "work_dir": str(self.work_dir),
        }
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)

    # -- stop -------------------------------------------------------------------------------

    async def stop(self) -> None:
        """Graceful stop; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        settings = self.settings
        log.info("worker %s shutting down", self.worker_id)
        if self.client is not None:
            await self.client.stop_heartbeats()
        if self.tasks is not None:
            await self.tasks.drain(settings.drain_timeout, self._hurry)
        if self.client is not None:
            left = await self.client.flush_results(settings.flush_timeout)
            if left:
                log.warning(
                    "%d result(s) not delivered; they are kept in %s and delivered"
                    " after the next start",
                    left,
                    self.work_dir / "results",
                )
        if self._server is not None:
            await self._server.stop(settings.shutdown_grace)
        await self._release()
        log.info("worker %s stopped", self.worker_id)

    async def _release(self) -> None:
        for task in list(self._background):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.output is not None:
            await self.output.close()
        if self.client is not None:
            await self.client.close()
        if self.tasks is not None:
            await self.tasks.close()
        if self.docker is not None:
            await self.docker.close()
        if self.limits is not None:
            await asyncio.to_thread(self.limits.close)
        close = getattr(self._gpu, "close", None)
        if close is not None:
            await asyncio.to_thread(close)
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    # -- run --------------------------------------------------------------------------------

    async def run(
        self,
        ready_file: Path | None = None,
        on_started: Callable[[WorkerNode], None] | None = None,
    ) -> None:
        """Start, serve until SIGINT/SIGTERM, stop gracefully. A second signal while
        stopping cancels running tasks at once instead of waiting for them."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            if stop.is_set():
                log.warning("second signal: cancelling running tasks now")
                self._hurry.set()
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        try:
            await self.start()
            if on_started is not None:
                on_started(self)
            if ready_file is not None:
                self.write_ready_file(ready_file)
            await stop.wait()
        finally:
            try:
                await self.stop()
            finally:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)
