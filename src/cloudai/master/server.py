"""The master's assembly: ``build_master`` makes the components from MasterSettings,
``MasterServer`` runs their lifecycle.

``MasterServer`` makes nothing itself: it receives ``MasterComponents`` (tests pass
small real parts instead of patching attributes) and runs its stages in order:

    lock        (taken by open_resources) <data_dir>/master.lock: one master per data dir
    store       open the database, load the registry and the tasks, start writing
    telemetry   per-worker telemetry tasks, the inactivity check
    ingest      the heartbeats-per-second meter
    gRPC        the worker-facing service
    HTTP        telemetry WebSockets, /health, the admin API
    workers     authorise the --allow-worker entries (MasterRegister where an address is given)
    rejoin      call MasterRegister on every stored worker with an address, so that a
                restarted master calls its workers back with nobody acting

and stops them in reverse, as uvicorn does: stop accepting (HTTP: clients get 1001;
gRPC: in-flight calls get ``shutdown_grace`` seconds, heartbeat streams end at once),
then background work (registration retries, telemetry tasks), then flush the store.
A stage that fails to start stops the ones already started.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from aiohttp import web

from cloudai.addresses import is_wildcard, join_host_port
from cloudai.alerts.manager import AlertService
from cloudai.api.models import ClusterCa
from cloudai.history.recorder import HistoryConfig, HistoryRecorder
from cloudai.master import (
    admin_api,
    alerts_api,
    dashboard,
    history_api,
    metrics,
    output_api,
)
from cloudai.master.access import AccessControl
from cloudai.master.alerts_admin import AlertsAdmin
from cloudai.master.bus_ingest import BusIngest
from cloudai.master.cluster_admin import ClusterAdmin, MasterCounters, task_model
from cloudai.master.enrollment import WorkerEnrollment
from cloudai.master.http_app import WebSocketConfig, create_app
from cloudai.master.http_auth import install_auth, server_ssl_context
from cloudai.master.metrics import (
    LiveCollector,
    MasterMetrics,
    handoff_families,
    history_families,
    read_handoff,
    read_history,
)
from cloudai.master.output_service import TaskOutputs
from cloudai.master.persistence import MasterPersistence
from cloudai.master.rate_meter import RateMeter
from cloudai.master.registry import WorkerRegistry
from cloudai.master.service import MasterService, WorkerCertificates
from cloudai.master.settings import MasterSettings
from cloudai.master.subscriptions import TASKS as TASKS_TOPIC
from cloudai.master.sync_ingest import HeartbeatHandoff, SyncMasterServicer
from cloudai.master.task_output import TaskOutputStore
from cloudai.master.tasks import TaskBook, TaskListener, TaskState
from cloudai.master.worker_link import WorkerLink
from cloudai.master.ws_hub import TelemetryHub, tick_interval
from cloudai.proto.options import (
    SYNC_SERVER_MAX_CALLS,
    SYNC_SERVER_THREADS,
    grpc_server_options,
)
from cloudai.proto.tolerant import add_master_rpcs
from cloudai.security.credentials import MasterIdentity, load_or_create_master, local_hosts
from cloudai.store import Store, open_store
from cloudai.store.urls import resolve_url
from cloudai.telemetry.manager import TelemetryManager

log = logging.getLogger(__name__)


LOCK_FILENAME = "master.lock"


class DataDirLocked(OSError):
    """Another master holds the data directory's lock."""


class DataDirLock:
    """``<data_dir>/master.lock``, held (``flock``) for the master's life, with its pid.

    The kernel releases it when the process ends, however it ends (SIGKILL included), so
    a stale file never blocks a restart; the file itself stays.
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, data_dir: Path) -> DataDirLock:
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / LOCK_FILENAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            who = f"pid {holder}" if holder.isdigit() else "another process"
            raise DataDirLocked(
                f"another master ({who}) is using the data directory {data_dir} "
                f"(it holds {path}): stop it first, or give this one another --data-dir"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the file drops the lock


@dataclass(slots=True)
class MasterResources:
    """What a master opens before it is built: its data directory's lock, its database
    and, in secure mode, the cluster identity (CA and the master's certificate)."""

    store: Store
    identity: MasterIdentity | None  # None: --insecure
    lock: DataDirLock | None = None

    def close(self) -> None:
        try:
            self.store.close()
        finally:
            self.release_lock()

    def release_lock(self) -> None:
        if self.lock is not None:
            self.lock.release()


def certificate_hosts(settings: MasterSettings) -> list[str]:
    extra = [h for h in (settings.advertise_host, settings.http_host, settings.grpc_host) if h]
    return local_hosts([h for h in extra if not is_wildcard(h)])


async def open_resources(settings: MasterSettings) -> MasterResources:
    """Lock the data directory (``DataDirLocked`` when another master holds it), open the
    store (``StoreError`` when it is corrupt: see store/factory.py) and load (or, at the
    first start, create) the cluster identity."""
    lock = await asyncio.to_thread(DataDirLock.acquire, settings.data_dir)
    try:
        store = await asyncio.to_thread(open_store, settings.database_url, settings.data_dir)
    except BaseException:
        lock.release()
        raise
    resources = MasterResources(store, None, lock)
    try:
        if not settings.insecure:
            resources.identity = await asyncio.to_thread(
                load_or_create_master, settings.tls_dir, certificate_hosts(settings)
            )
    except BaseException:
        resources.close()
        raise
    return resources


@dataclass(slots=True)
class ListenPorts:
    """The ports the master listens on, known once its servers have started."""

    grpc: int | None = None
    http: int | None = None


@dataclass(slots=True)
class MasterComponents:
    """Everything a master is made of, wired together (see ``build_master``)."""

    settings: MasterSettings
    resources: MasterResources
    ports: ListenPorts
    registry: WorkerRegistry
    telemetry: TelemetryManager
    hub: TelemetryHub
    link: WorkerLink
    tasks: TaskBook
    service: MasterService
    persistence: MasterPersistence
    admin: ClusterAdmin
    ingest_rate: RateMeter
    access: AccessControl | None  # secure mode: tokens
    enrollment: WorkerEnrollment | None  # secure mode: joining
    metrics: MasterMetrics | None = None  # GET /metrics (Prometheus)
    alerts: AlertService | None = None  # alert rules on the telemetry (docs/ALERTS.md)
    output: TaskOutputs | None = None  # live task output (docs/TASK_OUTPUT.md)
    history: HistoryRecorder | None = None  # telemetry history (docs/HISTORY.md)
    bus: BusIngest | None = None  # --bus: telemetry and calls from gateways (docs/SCALING.md)


def task_events(hub: TelemetryHub) -> TaskListener:
    """A task book listener that tells the ``tasks`` topic of the stream each change of a
    task (built only when a client listens)."""

    def publish(task: TaskState) -> None:
        if hub.subscribed(TASKS_TOPIC):
            hub.publish(TASKS_TOPIC, task_model(task).model_dump(mode="json"))

    return publish


def build_master(settings: MasterSettings, resources: MasterResources) -> MasterComponents:
    """Make the master's components from its settings and open resources; connect them."""
    identity = resources.identity
    ports = ListenPorts()
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
        credentials=identity.channel_credentials() if identity else None,
    )
    tasks = TaskBook(
        registry,
        link,
        start_deadline=settings.task_start_deadline,
        vanish_grace=settings.task_vanish_grace,
        offline_wait=settings.task_offline_wait,
        retry_delay=settings.task_retry_delay,
    )
    certificates = WorkerCertificates(registry) if identity else None
    output = TaskOutputs(
        tasks,
        TaskOutputStore(settings.task_output_dir, settings.task_output_max_bytes),
        retention=settings.task_output_retention,
    )
    service = MasterService(
        registry,
        telemetry,
        tasks,
        on_registered=tasks.worker_registered,
        certificates=certificates,
        output=output,
    )
    persistence = MasterPersistence(
        resources.store, heartbeat_flush_interval=settings.store_flush_interval
    )
    telemetry.subscribe(hub.on_telemetry)
    telemetry.subscribe(tasks.on_telemetry)
    ingest_rate = RateMeter(window=10.0)
    counters = MasterCounters(
        heartbeats=lambda: service.stats.heartbeats,
        heartbeats_per_second=lambda: ingest_rate.rate,
        websocket_clients=lambda: hub.client_count,
        fanout_tick=lambda: tick_interval(hub.batch_interval, hub.client_count, hub.max_frame_rate),
    )
    admin = ClusterAdmin(
        registry,
        telemetry,
        tasks,
        link,
        counters,
        registry_committed=persistence.registry_committed,
    )
    tasks.set_placer(admin.place_retry)
    access = enrollment = None
    if identity is not None:

        def join_port() -> int:
            return ports.http or settings.http_port

        access = AccessControl(resources.store, identity.ca_fingerprint, join_port)
        enrollment = WorkerEnrollment(identity, access, registry, telemetry, persistence.drain)
    master_metrics = MasterMetrics.for_master(
        service=service.stats,
        telemetry=telemetry,
        hub=hub,
        tasks=tasks,
        persistence=persistence,
        ingest_rate=ingest_rate,
    )
    scheme = "http" if settings.insecure else "https"
    alert_host = settings.advertise_host or settings.master_id
    alerts = AlertService(
        resources.store,
        rules_file=settings.alert_rules,
        webhooks=settings.alert_webhooks,
        evaluation_interval=settings.alert_evaluation_interval,
        publish=hub.publish,
        generator_url=lambda: (
            f"{scheme}://{join_host_port(alert_host, ports.http or settings.http_port)}/api/alerts"
        ),
    )
    master_metrics.set_alert_source(alerts.state_counts)
    tasks.add_listener(task_events(hub))
    history = None
    if settings.history_enabled:
        recorder = history = history_recorder(settings, resources.store)
        master_metrics.add(
            LiveCollector(lambda: read_history(recorder.current_stats()), history_families)
        )
    return MasterComponents(
        settings,
        resources,
        ports,
        registry,
        telemetry,
        hub,
        link,
        tasks,
        service,
        persistence,
        admin,
        ingest_rate,
        access,
        enrollment,
        master_metrics,
        alerts,
        output,
        history=history,
        bus=bus_ingest(settings, registry, telemetry, service, certificates, access),
    )


def bus_ingest(
    settings: MasterSettings,
    registry: WorkerRegistry,
    telemetry: TelemetryManager,
    service: MasterService,
    certificates: WorkerCertificates | None,
    access: AccessControl | None = None,
) -> BusIngest | None:
    """The bus consumer when ``--bus`` is set (imported lazily: no bus, no NATS client)."""
    if not settings.bus:
        return None
    # Secure mode: MasterSettings refused a bus without a credential (cloudai.bus.auth).
    from cloudai.bus.nats_bus import NatsBus
    from cloudai.bus.subjects import Subjects

    bus = NatsBus.from_settings(settings, name=f"cloudai-master-{settings.master_id}")
    return BusIngest(
        bus, Subjects(settings.bus_prefix), registry, telemetry, service, certificates, access
    )


def history_recorder(settings: MasterSettings, store: Store) -> HistoryRecorder:
    """The history's recorder: writing in a child process of its own on the same
    database (``history_writer = "process"``, the default) or in a thread."""
    config = history_config(settings)
    if settings.history_writer == "thread":
        return HistoryRecorder(store, config)
    from cloudai.history.writer_process import HistoryProcess

    url = resolve_url(settings.database_url, settings.data_dir)
    return HistoryProcess(store, url.render_as_string(hide_password=False), config)


def history_config(settings: MasterSettings) -> HistoryConfig:
    return HistoryConfig(
        retentions=(
            settings.history_raw_retention,
            settings.history_minute_retention,
            settings.history_hour_retention,
        ),
        flush_interval=settings.history_flush_interval,
        prune_interval=settings.history_prune_interval,
        buffer_size=settings.history_buffer_size,
        resolution=settings.history_resolution,
    )


async def assemble(settings: MasterSettings) -> MasterServer:
    """Open the resources, build the components, hand them to a MasterServer."""
    resources = await open_resources(settings)
    try:
        return MasterServer(build_master(settings, resources))
    except BaseException:
        resources.close()
        raise


@dataclass(slots=True)
class Stage:
    name: str
    start: Callable[[], Awaitable[None]]
    stop: Callable[[], Awaitable[None]]


@dataclass
class MasterServer:
    parts: MasterComponents
    _started: list[Stage] = field(default_factory=list)
    _grpc_server: grpc.aio.Server | grpc.Server | None = None
    _handoff: HeartbeatHandoff | None = None  # grpc_server = "sync": threads -> loop
    _http_runner: web.AppRunner | None = None
    _meter_task: asyncio.Task[None] | None = None
    _rejoin_report: asyncio.Task[None] | None = None

    @property
    def settings(self) -> MasterSettings:
        return self.parts.settings

    @property
    def grpc_port(self) -> int | None:
        return self.parts.ports.grpc

    @property
    def http_port(self) -> int | None:
        return self.parts.ports.http

    @property
    def persistence(self) -> MasterPersistence:
        return self.parts.persistence

    def stages(self) -> list[Stage]:
        """The start order; stop runs it backwards."""
        return [
            Stage("lock", _nothing, self._release_lock),
            Stage("store", self._open_store, self._close_store),
            Stage("access", self._load_access, _nothing),
            Stage("history", self._start_history, self._stop_history),
            Stage("telemetry", self._start_telemetry, self._stop_telemetry),
            Stage("alerts", self._start_alerts, self._stop_alerts),
            Stage("ingest meter", self._start_meter, self._stop_meter),
            *self._bus_stages(),
            Stage("gRPC", self._start_grpc, self._stop_grpc),
            Stage("HTTP", self._start_http, self._stop_http),
            Stage("allowed workers", self._allow_workers, _nothing),
            Stage("rejoin", self._rejoin_workers, self._stop_rejoining),
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
        parts = self.parts
        persistence = parts.persistence
        try:
            workers, tasks = await persistence.load(parts.registry, parts.tasks)
        except BaseException:
            await asyncio.to_thread(persistence.store.close)
            raise
        log.info("store %s: loaded %d workers and %d tasks", persistence.store.url, workers, tasks)
        persistence.attach(parts.registry, parts.tasks)
        # Workers not back yet are listed (state "unknown") rather than dropped.
        parts.telemetry.add_known(entry.worker_id for entry in parts.registry)
        parts.telemetry.subscribe(persistence.on_telemetry)
        persistence.start()

    async def _load_access(self) -> None:
        settings, access = self.settings, self.parts.access
        if access is None:
            log.warning(
                "--insecure: plaintext gRPC and HTTP, no certificates and no tokens; anyone "
                "who reaches this master's ports can act as a worker or an admin. Use it only "
                "with the Go implementation's workers and tools."
            )
            return
        await access.load()
        await access.ensure_bootstrap_token(settings.admin_token_file)

    async def _close_store(self) -> None:
        await self.parts.tasks.close()
        await self.parts.persistence.stop()  # writes what is queued, closes the store
        if self.parts.output is not None:
            await asyncio.to_thread(self.parts.output.store.close)

    async def _start_history(self) -> None:
        history = self.parts.history
        if history is not None:
            await history.start()  # rebuilds the open minute and hour from the store
            history.attach(self.parts.telemetry)

    async def _stop_history(self) -> None:
        if self.parts.history is not None:
            await self.parts.history.stop()  # writes the buffer and the open buckets

    async def _start_telemetry(self) -> None:
        self.parts.telemetry.start()
        self.parts.tasks.start()  # lost tasks, tasks waiting for their worker
        if self.parts.output is not None:
            self.parts.output.start()  # the task output's retention

    async def _stop_telemetry(self) -> None:
        if self.parts.output is not None:
            await self.parts.output.stop()
        await self.parts.link.close()  # registration retries and channels to workers
        await self.parts.telemetry.shutdown()

    async def _start_alerts(self) -> None:
        alerts = self.parts.alerts
        if alerts is None:
            return
        await alerts.load()  # a bad rules file: RuleError, the master does not start
        alerts.attach(self.parts.telemetry)
        alerts.start()

    async def _stop_alerts(self) -> None:
        if self.parts.alerts is not None:
            await self.parts.alerts.stop()

    def _bus_stages(self) -> list[Stage]:
        """With ``--bus``: consume gateways' telemetry and calls (before gRPC, so that a
        worker that moved to a gateway is served as soon as the master is)."""
        bus = self.parts.bus
        if bus is None:
            return []
        return [Stage("bus", bus.start, bus.stop)]

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

    def _make_grpc_server(self) -> grpc.aio.Server | grpc.Server:
        """grpc.aio on the event loop (``grpc_server = "aio"``), or grpcio's synchronous
        server on a thread pool handing heartbeats to the loop in batches ("sync", unary
        calls only: master/sync_ingest.py)."""
        settings, service = self.settings, self.parts.service
        options = grpc_server_options(settings.max_message_bytes)
        if settings.grpc_server == "aio":
            aio_server = grpc.aio.server(options=options)
            add_master_rpcs(service, aio_server)
            return aio_server
        loop = asyncio.get_running_loop()
        handoff = self._handoff = HeartbeatHandoff(loop, service.apply_admitted)
        if self.parts.metrics is not None:
            self.parts.metrics.add(LiveCollector(lambda: read_handoff(handoff), handoff_families))
        sync_server = grpc.server(
            futures.ThreadPoolExecutor(SYNC_SERVER_THREADS, thread_name_prefix="grpc"),
            options=options,
            maximum_concurrent_rpcs=SYNC_SERVER_MAX_CALLS,
        )
        add_master_rpcs(
            SyncMasterServicer(service, self._handoff, loop), sync_server, streams=False
        )
        return sync_server

    async def _start_grpc(self) -> None:
        settings = self.settings
        server = self._make_grpc_server()
        address = join_host_port(settings.grpc_host, settings.grpc_port)
        identity = self.parts.resources.identity
        # gRPC says a busy port with a traceback (RuntimeError) after a line of its own:
        # find it first, and say it in one line.
        busy = await asyncio.to_thread(port_in_use, settings.grpc_host, settings.grpc_port)
        if busy:
            raise OSError(f"cannot listen for gRPC on {address}: {busy}")
        try:
            if identity is None:
                port = server.add_insecure_port(address)
            else:
                port = server.add_secure_port(address, identity.server_credentials())
        except RuntimeError:
            port = 0
        if not port:
            raise OSError(f"cannot listen for gRPC on {address}")
        if isinstance(server, grpc.aio.Server):
            await server.start()
        else:
            server.start()
        self._grpc_server = server
        self.parts.ports.grpc = port
        self.parts.link.grpc_port = port
        log.info("gRPC listening on %s", join_host_port(settings.grpc_host, port))

    async def _stop_grpc(self) -> None:
        server, self._grpc_server = self._grpc_server, None
        if server is None:
            return
        if not isinstance(server, grpc.aio.Server):  # sync: calls end on their threads
            stopped = server.stop(self.settings.shutdown_grace)
            await asyncio.to_thread(stopped.wait)
            if self._handoff is not None:
                self._handoff.close()
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
        dashboard.add_routes(app)  # GET / and /assets/{name}: the web page (holds no data)
        if parts.metrics is not None:
            metrics.add_routes(app, parts.metrics)
        if parts.alerts is not None:
            alerts_api.install(app, AlertsAdmin(parts.alerts))
        if parts.output is not None:
            output_api.install(app, parts.output)
        if parts.history is not None:
            history_api.install(
                app, history_api.HistoryAccess(parts.history, parts.registry.__contains__)
            )
        identity, access, enrollment = parts.resources.identity, parts.access, parts.enrollment
        ssl_context = None
        if identity is None or access is None or enrollment is None:
            admin_api.add_routes(app, parts.admin, settings.admin_token)
        else:
            admin_api.add_routes(
                app,
                parts.admin,
                None,
                tokens=access,
                join=enrollment.join,
                master_address=admin_api.master_address_from(
                    settings.advertise_host, lambda: parts.ports.grpc or settings.grpc_port
                ),
                cluster_ca=ClusterCa(
                    ca_pem=identity.ca_pem.decode(), fingerprint=identity.ca_fingerprint
                ),
            )
            install_auth(app, access.authenticate)
            cert_file, key_file = identity.cert_file, identity.key_file
            if settings.tls_cert is not None and settings.tls_key is not None:
                cert_file, key_file = settings.tls_cert, settings.tls_key
            ssl_context = server_ssl_context(cert_file, key_file)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(
                runner,
                settings.http_host,
                settings.http_port,
                reuse_address=True,
                ssl_context=ssl_context,
            )
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._http_runner = runner
        self.parts.ports.http = int(runner.addresses[0][1])
        address = join_host_port(settings.http_host, self.parts.ports.http)
        scheme = "https" if ssl_context is not None else "http"
        log.info(
            "%s listening on %s (WebSocket /ws/telemetry, /health, /api, /metrics)",
            scheme.upper(),
            address,
        )
        log.info("dashboard: %s://%s/", scheme, address)

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

    async def _rejoin_workers(self) -> None:
        """Call MasterRegister on every stored worker with an address (in the background,
        in parallel, bounded, with back-off): a worker that learned its master only from
        MasterRegister (the Go worker) rejoins a restarted master with nobody acting."""
        link = self.parts.link
        round_ = link.rejoin(self.parts.registry.with_address())
        if not round_.total:
            return
        log.info("calling MasterRegister on %d stored workers", round_.total)
        started = time.monotonic()

        async def report() -> None:
            await round_.done.wait()
            log.info("%s in %.1f s", round_.describe(), time.monotonic() - started)

        self._rejoin_report = asyncio.get_running_loop().create_task(report(), name="rejoin-report")

    async def _stop_rejoining(self) -> None:
        report, self._rejoin_report = self._rejoin_report, None
        if report is not None:
            report.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await report
        await self.parts.link.cancel_registrations()

    async def _release_lock(self) -> None:
        self.parts.resources.release_lock()

    # -- supervision ------------------------------------------------------------------------

    def write_ready_file(self, path: Path) -> None:
        """Tell a supervisor (or a test) where we listen, atomically."""
        data = {"pid": os.getpid(), "grpc_port": self.grpc_port, "http_port": self.http_port}
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)


def port_in_use(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on when another socket has it (the text of
    the error), else None. Binds the addresses the host resolves to as gRPC does
    (SO_REUSEADDR, so a port in TIME_WAIT is free), and closes them at once."""
    if not port:
        return None
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError:
        return None  # gRPC will say what is wrong with the host
    for family, kind, proto, _name, sockaddr in infos:
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(sockaddr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return exc.strerror or "address already in use"
    return None


async def _nothing() -> None:
    return None
