"""MasterServer: builds the master's components from MasterSettings and runs them.

Start-up order: TelemetryManager, master service, gRPC server, HTTP/WebSocket server,
then (optionally) the interactive CLI. Shutdown is the reverse, explicitly:
stop accepting (gRPC and HTTP), let in-flight RPCs finish within the grace period,
close WebSocket clients with 1001 (going away), stop background work and every
per-worker task, flush the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
from aiohttp import web

from cloudai.addresses import join_host_port
from cloudai.master import admin_api
from cloudai.master.http_app import WebSocketConfig, create_app
from cloudai.master.persistence import MasterPersistence
from cloudai.master.registry import WorkerEntry, WorkerRegistry
from cloudai.master.service import MasterService
from cloudai.master.settings import MasterSettings
from cloudai.master.status import RateMeter
from cloudai.master.tasks import TaskBook
from cloudai.master.worker_link import WorkerLink
from cloudai.master.ws_hub import TelemetryHub
from cloudai.proto import rpc
from cloudai.proto.options import grpc_server_options
from cloudai.store import open_store
from cloudai.telemetry.manager import TelemetryManager

log = logging.getLogger(__name__)

AppExtension = Callable[["MasterServer", web.Application], None]


class MasterServer:
    def __init__(self, settings: MasterSettings) -> None:
        self.settings = settings
        self.telemetry = TelemetryManager(
            settings.inactivity_timeout, queue_size=settings.heartbeat_queue_size
        )
        self.registry = WorkerRegistry()
        self.hub = TelemetryHub(settings.ws_batch_interval, settings.ws_max_frame_rate)
        self.link = WorkerLink(
            self.registry,
            master_id=settings.master_id,
            grpc_port=settings.grpc_port,
            advertise_host=settings.advertise_host,
            max_message_bytes=settings.max_message_bytes,
        )
        self.tasks = TaskBook(self.registry, self.link)
        self.service = MasterService(self.registry, self.telemetry, self.tasks)
        self.telemetry.subscribe(self.hub.on_telemetry)
        self.telemetry.subscribe(self.tasks.on_telemetry)
        self.app_extensions: list[AppExtension] = [admin_api.add_routes]
        self.after_start: list[Callable[[], Awaitable[None]]] = []
        self.before_stop: list[Callable[[], Awaitable[None]]] = []
        self.ingest_rate = RateMeter(window=10.0)
        self.grpc_port: int | None = None
        self.http_port: int | None = None
        self._grpc_server: grpc.aio.Server | None = None
        self._http_runner: web.AppRunner | None = None
        self._stopped = asyncio.Event()
        self._meter_task: asyncio.Task[None] | None = None
        self.persistence: MasterPersistence | None = None

    # -- start ------------------------------------------------------------------------------

    async def start(self) -> None:
        settings = self.settings
        await self._open_store()
        self.telemetry.start()
        self._meter_task = asyncio.get_running_loop().create_task(self._sample_rates())

        server = grpc.aio.server(options=grpc_server_options(settings.max_message_bytes))
        rpc.add_MasterWorkerServicer_to_server(self.service, server)
        grpc_address = join_host_port(settings.grpc_host, settings.grpc_port)
        self.grpc_port = server.add_insecure_port(grpc_address)
        if not self.grpc_port:
            raise OSError(f"cannot listen for gRPC on {grpc_address}")
        await server.start()
        self._grpc_server = server
        self.link.grpc_port = self.grpc_port
        log.info("gRPC listening on %s", join_host_port(settings.grpc_host, self.grpc_port))

        if settings.http_enabled:
            app = create_app(
                self.telemetry,
                self.hub,
                WebSocketConfig(
                    settings.ws_ping_interval, settings.ws_client_timeout, settings.ws_compression
                ),
            )
            for extend in self.app_extensions:
                extend(self, app)
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            site = web.TCPSite(runner, settings.http_host, settings.http_port, reuse_address=True)
            await site.start()
            self._http_runner = runner
            self.http_port = int(runner.addresses[0][1])
            http_address = join_host_port(settings.http_host, self.http_port)
            log.info("HTTP listening on %s (WebSocket /ws/telemetry, /health)", http_address)

        for worker_id, address in settings.allowed_workers.items():
            self.registry.authorise(worker_id, address)
            if address:
                self.link.connect(worker_id)

    # -- admin operations (API and console share these) ----------------------------------

    def authorise_worker(self, worker_id: str, address: str) -> WorkerEntry:
        """Register a worker as the admin's ``register``: authorise, then MasterRegister."""
        entry = self.registry.authorise(worker_id, address)
        if address:
            self.link.connect(worker_id)
        return entry

    def revoke_worker(self, worker_id: str) -> bool:
        if not self.registry.revoke(worker_id):
            return False
        self.telemetry.unregister_worker(worker_id)
        return True

    def summary(self) -> dict[str, object]:
        workers, active = self.telemetry.worker_count()
        counts = self.tasks.counts()
        finished = sum(counts.get(s, 0) for s in ("success", "failure", "cancelled", "rejected"))
        return {
            "workers": len(self.registry),
            "workers_reporting": workers,
            "active_workers": active,
            "tasks_running": counts.get("running", 0) + counts.get("assigned", 0),
            "tasks_queued": counts.get("queued", 0),
            "tasks_finished": finished,
            "tasks_by_status": counts,
            "heartbeats": self.service.stats.heartbeats,
            "heartbeats_per_second": round(self.ingest_rate.rate, 2),
            "websocket_clients": self.hub.client_count,
        }

    async def _sample_rates(self) -> None:
        while True:
            self.ingest_rate.sample(self.service.stats.heartbeats)
            await asyncio.sleep(1.0)

    async def _open_store(self) -> None:
        settings = self.settings
        store = await asyncio.to_thread(open_store, settings.database_url, settings.data_dir)
        persistence = MasterPersistence(
            store, heartbeat_flush_interval=settings.store_flush_interval
        )
        workers, tasks = await persistence.load(self.registry, self.tasks)
        log.info("store %s: loaded %d workers and %d tasks", store.url, workers, tasks)
        persistence.attach(self.registry, self.tasks)
        self.telemetry.subscribe(persistence.on_telemetry)
        persistence.start()
        self.persistence = persistence

    def write_ready_file(self, path: Path) -> None:
        """Tell a supervisor (or a test) where we listen, atomically."""
        data = {"pid": os.getpid(), "grpc_port": self.grpc_port, "http_port": self.http_port}
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)

    # -- stop -------------------------------------------------------------------------------

    async def stop(self) -> None:
        grace = self.settings.shutdown_grace
        log.info("shutting down")
        # 1. Stop accepting; in-flight RPCs get `grace` seconds. WebSocket clients get 1001.
        stopping: list[Awaitable[object]] = []
        if self._grpc_server is not None:
            stopping.append(asyncio.ensure_future(self._grpc_server.stop(grace)))
            await asyncio.sleep(0)  # new RPCs are refused from here on
            self.service.end_streams()
        if self._http_runner is not None:
            stopping.append(self._http_runner.cleanup())
        await asyncio.gather(*stopping, return_exceptions=True)
        # 2. Background work: registration retries, per-worker telemetry tasks.
        if self._meter_task is not None:
            self._meter_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._meter_task
        await self.link.close()
        await self.telemetry.shutdown()
        await self.tasks.close()
        if self.persistence is not None:
            await self.persistence.stop()
        self._stopped.set()
        log.info("stopped")

    # -- run --------------------------------------------------------------------------------

    async def run(
        self,
        ready_file: Path | None = None,
        foreground: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        """Start, serve until SIGINT/SIGTERM (or until ``foreground`` returns), stop."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await self.start()
            for hook in self.after_start:
                await hook()
            if ready_file is not None:
                self.write_ready_file(ready_file)
            waiters = [asyncio.ensure_future(stop.wait())]
            if foreground is not None:
                waiters.append(asyncio.ensure_future(foreground()))
            _done, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            for hook in self.before_stop:
                await hook()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await self.stop()
