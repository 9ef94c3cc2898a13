"""The master's assembly: ``build_master`` makes the components from MasterSettings,
``MasterServer`` runs their lifecycle.

``MasterServer`` makes nothing itself: it receives ``MasterComponents`` (tests pass
small real parts instead of patching attributes) and runs its stages in order:

    store       open the database, load the registry and the tasks, start writing
    telemetry   per-worker telemetry tasks, the inactivity check
    ingest      the heartbeats-per-second meter
    gRPC        the worker-facing service
    HTTP        telemetry WebSockets, /health, the admin API
    workers     authorise the --allow-worker entries (MasterRegister where an address is given)

and stops them in reverse, as uvicorn does: stop accepting (HTTP: clients get 1001;
gRPC: in-flight calls get ``shutdown_grace`` seconds, heartbeat streams end at once),
then background work (registration retries, telemetry tasks), then flush the store.
A stage that fails to start stops the ones already started.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from aiohttp import web

from cloudai.addresses import is_wildcard, join_host_port
from cloudai.master import admin_api
from cloudai.master.cluster_admin import ClusterAdmin, MasterCounters
from cloudai.master.http_app import WebSocketConfig, create_app
from cloudai.master.persistence import MasterPersistence
from cloudai.master.rate_meter import RateMeter
from cloudai.master.registry import WorkerRegistry
from cloudai.master.service import MasterService
from cloudai.master.settings import MasterSettings
from cloudai.master.tasks import TaskBook
from cloudai.master.worker_link import WorkerLink
from cloudai.master.ws_hub import TelemetryHub, tick_interval
from cloudai.proto import rpc
from cloudai.proto.options import grpc_server_options
from cloudai.store import open_store
from cloudai.telemetry.manager import TelemetryManager

log = logging.getLogger(__name__)


@dataclass(slots=True)
class MasterComponents:
    """Everything a master is made of, wired together (see ``build_master``)."""

    settings: MasterSettings
    registry: WorkerRegistry
    telemetry: TelemetryManager
    hub: TelemetryHub
    link: WorkerLink
    tasks: TaskBook
    service: MasterService
    admin: ClusterAdmin
    ingest_rate: RateMeter


def build_master(settings: MasterSettings) -> MasterComponents:
    """Make the master's components from its settings and connect them."""
    registry = WorkerRegistry()
    telemetry = TelemetryManager(
        settings.inactivity_timeout, queue_size=settings.heartbeat_queue_size
    )
    hub = TelemetryHub(settings.ws_batch_interval, settings.ws_max_frame_rate)
    advertise_host = settings.advertise_host
    if not advertise_host and not is_wildcard(settings.grpc_host):
        advertise_host = settings.grpc_host  # the one address we listen on
    link = WorkerLink(
        registry,
        master_id=settings.master_id,
        grpc_port=settings.grpc_port,
        advertise_host=advertise_host,
        max_message_bytes=settings.max_message_bytes,
    )
    tasks = TaskBook(registry, link)
    service = MasterService(registry, telemetry, tasks)
    telemetry.subscribe(hub.on_telemetry)
    telemetry.subscribe(tasks.on_telemetry)
    ingest_rate = RateMeter(window=10.0)
    counters = MasterCounters(
        heartbeats=lambda: service.stats.heartbeats,
        heartbeats_per_second=lambda: ingest_rate.rate,
        websocket_clients=lambda: hub.client_count,
        fanout_tick=lambda: tick_interval(hub.batch_interval, hub.client_count, hub.max_frame_rate),
    )
    admin = ClusterAdmin(registry, telemetry, tasks, link, counters)
    return MasterComponents(
        settings, registry, telemetry, hub, link, tasks, service, admin, ingest_rate
    )


@dataclass(slots=True)
class Stage:
    name: str
    start: Callable[[], Awaitable[None]]
    stop: Callable[[], Awaitable[None]]


@dataclass
class MasterServer:
    parts: MasterComponents
    grpc_port: int | None = None
    http_port: int | None = None
    persistence: MasterPersistence | None = None
    _started: list[Stage] = field(default_factory=list)
    _grpc_server: grpc.aio.Server | None = None
    _http_runner: web.AppRunner | None = None
    _meter_task: asyncio.Task[None] | None = None

    @property
    def settings(self) -> MasterSettings:
        return self.parts.settings

    def stages(self) -> list[Stage]:
        """The start order; stop runs it backwards."""
        return [
            Stage("store", self._open_store, self._close_store),
            Stage("telemetry", self._start_telemetry, self._stop_telemetry),
            Stage("ingest meter", self._start_meter, self._stop_meter),
            Stage("gRPC", self._start_grpc, self._stop_grpc),
            Stage("HTTP", self._start_http, self._stop_http),
            Stage("allowed workers", self._allow_workers, _nothing),
        ]

    async def start(self) -> None:
        for stage in self.stages():
            try:
                await stage.start()
            except BaseException:
                log.debug("master stage %s failed to start", stage.name)
                await self.stop()
                raise
            self._started.append(stage)

    async def stop(self) -> None:
        if self._started:
            log.info("shutting down")
        while self._started:
            stage = self._started.pop()
            try:
                await stage.stop()
            except Exception as exc:  # keep stopping the rest; say what failed, once
                log.error("stopping %s failed: %s: %s", stage.name, type(exc).__name__, exc)

    # -- stages -----------------------------------------------------------------------------

    async def _open_store(self) -> None:
        settings, parts = self.settings, self.parts
        store = await asyncio.to_thread(open_store, settings.database_url, settings.data_dir)
        persistence = MasterPersistence(
            store, heartbeat_flush_interval=settings.store_flush_interval
        )
        workers, tasks = await persistence.load(parts.registry, parts.tasks)
        log.info("store %s: loaded %d workers and %d tasks", store.url, workers, tasks)
        persistence.attach(parts.registry, parts.tasks)
        parts.telemetry.subscribe(persistence.on_telemetry)
        persistence.start()
        self.persistence = persistence

    async def _close_store(self) -> None:
        await self.parts.tasks.close()
        if self.persistence is not None:
            await self.persistence.stop()

    async def _start_telemetry(self) -> None:
        self.parts.telemetry.start()

    async def _stop_telemetry(self) -> None:
        await self.parts.link.close()  # registration retries and channels to workers
        await self.parts.telemetry.shutdown()

    async def _start_meter(self) -> None:
        self._meter_task = asyncio.get_running_loop().create_task(
            self._sample_rates(), name="ingest-meter"
        )

    async def _stop_meter(self) -> None:
        if self._meter_task is not None:
            self._meter_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._meter_task
            self._meter_task = None

    async def _sample_rates(self) -> None:
        stats, meter = self.parts.service.stats, self.parts.ingest_rate
        while True:
            meter.sample(stats.heartbeats)
            await asyncio.sleep(1.0)

    async def _start_grpc(self) -> None:
        settings = self.settings
        server = grpc.aio.server(options=grpc_server_options(settings.max_message_bytes))
        rpc.add_MasterWorkerServicer_to_server(self.parts.service, server)
        address = join_host_port(settings.grpc_host, settings.grpc_port)
        port = server.add_insecure_port(address)
        if not port:
            raise OSError(f"cannot listen for gRPC on {address}")
        await server.start()
        self._grpc_server = server
        self.grpc_port = port
        self.parts.link.grpc_port = port
        log.info("gRPC listening on %s", join_host_port(settings.grpc_host, port))

    async def _stop_grpc(self) -> None:
        server, self._grpc_server = self._grpc_server, None
        if server is None:
            return
        stopping = asyncio.ensure_future(server.stop(self.settings.shutdown_grace))
        await asyncio.sleep(0)  # new RPCs are refused from here on
        self.parts.service.end_streams()
        await stopping

    async def _start_http(self) -> None:
        settings, parts = self.settings, self.parts
        if not settings.http_enabled:
            return
        app = create_app(
            parts.telemetry,
            parts.hub,
            WebSocketConfig(
                settings.ws_ping_interval, settings.ws_client_timeout, settings.ws_compression
            ),
        )
        admin_api.add_routes(app, parts.admin, settings.admin_token)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, settings.http_host, settings.http_port, reuse_address=True)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._http_runner = runner
        self.http_port = int(runner.addresses[0][1])
        address = join_host_port(settings.http_host, self.http_port)
        log.info("HTTP listening on %s (WebSocket /ws/telemetry, /health, /api)", address)

    async def _stop_http(self) -> None:
        runner, self._http_runner = self._http_runner, None
        if runner is not None:
            await runner.cleanup()

    async def _allow_workers(self) -> None:
        registry, link = self.parts.registry, self.parts.link
        for worker_id, address in self.settings.allowed_workers.items():
            registry.authorise(worker_id, address)
            if address:
                link.connect(worker_id)

    # -- supervision ------------------------------------------------------------------------

    def write_ready_file(self, path: Path) -> None:
        """Tell a supervisor (or a test) where we listen, atomically."""
        data = {"pid": os.getpid(), "grpc_port": self.grpc_port, "http_port": self.http_port}
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)


async def _nothing() -> None:
    return None
