"""The gateway's assembly and process: ``GatewayServer`` runs its stages in order and
stops them in reverse; ``run_gateway`` owns the process (uvloop, signals, ready file).

Stages::

    bus         connect to NATS; session events from the master (forget / reset)
    telemetry   with --ws-port: a TelemetryManager fed by every worker's heartbeats from
                the bus, the master's TelemetryHub and HTTP app on it (/ws/telemetry,
                /health): the same code, so the same JSON contract as the master
    gRPC        the worker-facing service (SO_REUSEPORT: gateways on one host share it)

Stopping: gRPC first (open heartbeat streams end at once: their workers reconnect to
another gateway), then the WebSocket clients (1001), then the bus is drained (what was
published is flushed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from aiohttp import web
from google.protobuf.message import DecodeError

from cloudai.addresses import join_host_port
from cloudai.bus.base import Bus, BusUnavailable, Delivery
from cloudai.bus.codec import BusDecodeError, decode_telemetry
from cloudai.bus.nats_bus import NatsBus
from cloudai.bus.subjects import Subjects, bus_servers
from cloudai.gateway.service import GatewayService
from cloudai.gateway.sessions import SessionCache
from cloudai.gateway.settings import GatewaySettings
from cloudai.loop import event_loop_factory
from cloudai.master.http_app import WebSocketConfig, create_app
from cloudai.master.ws_hub import TelemetryHub
from cloudai.proto import pb
from cloudai.proto.options import grpc_server_options
from cloudai.proto.tolerant import add_master_rpcs
from cloudai.telemetry.manager import TelemetryManager

log = logging.getLogger(__name__)


def gateway_server_options(settings: GatewaySettings) -> list[tuple[str, int]]:
    """The master's gRPC server options, with SO_REUSEPORT as the settings say."""
    options = [
        o for o in grpc_server_options(settings.max_message_bytes) if o[0] != "grpc.so_reuseport"
    ]
    options.append(("grpc.so_reuseport", 1 if settings.reuse_port else 0))
    return options


def server_credentials(tls_dir: Path) -> grpc.ServerCredentials:
    """Mutual TLS: the gateway's certificate (the gRPC name workers check), and workers
    must show a certificate of the cluster CA (who each is, the master checks per call)."""
    return grpc.ssl_server_credentials(
        [((tls_dir / "gateway.key").read_bytes(), (tls_dir / "gateway.pem").read_bytes())],
        root_certificates=(tls_dir / "ca.pem").read_bytes(),
        require_client_auth=True,
    )


@dataclass(slots=True)
class Stage:
    name: str
    start: Callable[[], Awaitable[None]]
    stop: Callable[[], Awaitable[None]]


@dataclass
class GatewayServer:
    settings: GatewaySettings
    bus: Bus
    subjects: Subjects = field(default_factory=Subjects)
    sessions: SessionCache = field(default_factory=SessionCache)
    service: GatewayService | None = None
    telemetry: TelemetryManager | None = None
    hub: TelemetryHub | None = None
    grpc_port: int | None = None
    http_port: int | None = None
    _grpc: grpc.aio.Server | None = None
    _http: web.AppRunner | None = None
    _started: list[Stage] = field(default_factory=list)
    bus_invalid: int = 0  # messages on the bus that did not decode

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> GatewayServer:
        bus = NatsBus(
            bus_servers(settings.bus),
            name=f"cloudai-gateway-{settings.gateway_id}",
            creds=settings.bus_creds,
            tls_ca=settings.bus_tls_ca,
        )
        return cls(settings, bus, Subjects(settings.bus_prefix))

    def stages(self) -> list[Stage]:
        return [
            Stage("bus", self._start_bus, self._stop_bus),
            Stage("telemetry", self._start_telemetry, self._stop_telemetry),
            Stage("gRPC", self._start_grpc, self._stop_grpc),
        ]

    async def start(self) -> None:
        for stage in self.stages():
            try:
                await stage.start()
            except BaseException:
                await self.stop()
                raise
            self._started.append(stage)

    async def stop(self) -> None:
        while self._started:
            stage = self._started.pop()
            try:
                await stage.stop()
            except Exception as exc:
                log.error("stopping %s failed: %s: %s", stage.name, type(exc).__name__, exc)

    # -- stages ----------------------------------------------------------------------------

    async def _start_bus(self) -> None:
        await self.bus.connect()
        self.service = GatewayService(
            self.settings.gateway_id,
            self.bus,
            self.subjects,
            self.sessions,
            call_timeout=self.settings.call_timeout,
        )
        await self.bus.subscribe(self.subjects.sessions, self.service.on_session_event)
        log.info("bus: connected (%s)", self.settings.bus)

    async def _stop_bus(self) -> None:
        await self.bus.close()

    async def _start_telemetry(self) -> None:
        settings = self.settings
        if settings.ws_port is None:
            return
        telemetry = TelemetryManager(
            settings.inactivity_timeout, queue_size=settings.heartbeat_queue_size
        )
        hub = TelemetryHub(settings.ws_batch_interval, settings.ws_max_frame_rate)
        telemetry.subscribe(hub.on_telemetry)
        telemetry.start()
        self.telemetry, self.hub = telemetry, hub
        await self.bus.subscribe(self.subjects.telemetry_all, self._on_telemetry)
        app = create_app(
            telemetry,
            hub,
            WebSocketConfig(settings.ws_ping_interval, settings.ws_client_timeout, False),
        )
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, settings.ws_host, settings.ws_port, reuse_address=True)
            await site.start()
        except BaseException:
            await runner.cleanup()
            await telemetry.shutdown()
            raise
        self._http = runner
        self.http_port = int(runner.addresses[0][1])
        log.info(
            "HTTP listening on %s (WebSocket /ws/telemetry: every worker, from the bus)",
            join_host_port(settings.ws_host, self.http_port),
        )

    async def _on_telemetry(self, msg: Delivery) -> None:
        assert self.telemetry is not None
        try:
            _received_at, raw = decode_telemetry(msg.data)
            heartbeat = pb.Heartbeat.FromString(raw)
        except (BusDecodeError, DecodeError):
            self.bus_invalid += 1
            return
        self.telemetry.process_heartbeat(heartbeat)

    async def _stop_telemetry(self) -> None:
        runner, self._http = self._http, None
        if runner is not None:
            await runner.cleanup()
        if self.telemetry is not None:
            await self.telemetry.shutdown()

    async def _start_grpc(self) -> None:
        settings, service = self.settings, self.service
        assert service is not None
        server = grpc.aio.server(options=gateway_server_options(settings))
        add_master_rpcs(service, server)
        address = join_host_port(settings.grpc_host, settings.grpc_port)
        try:
            if settings.insecure or settings.tls_dir is None:
                port = server.add_insecure_port(address)
            else:
                port = server.add_secure_port(address, server_credentials(settings.tls_dir))
        except RuntimeError:
            port = 0
        if not port:
            raise OSError(f"cannot listen for gRPC on {address}")
        await server.start()
        self._grpc = server
        self.grpc_port = port
        log.info("gRPC listening on %s", join_host_port(settings.grpc_host, port))

    async def _stop_grpc(self) -> None:
        server, self._grpc = self._grpc, None
        if server is None:
            return
        stopping = asyncio.ensure_future(server.stop(self.settings.shutdown_grace))
        await asyncio.sleep(0)
        if self.service is not None:
            self.service.end_streams()
        await stopping

    def write_ready_file(self, path: Path) -> None:
        data = {"pid": os.getpid(), "grpc_port": self.grpc_port, "http_port": self.http_port}
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)


def run_gateway(settings: GatewaySettings, *, ready_file: Path | None = None) -> int:
    """Run a gateway until SIGINT/SIGTERM; the exit status."""
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        try:
            runner.run(_serve(settings, ready_file))
        except (OSError, BusUnavailable) as exc:
            log.error("cannot start the gateway: %s", exc)
            return 1
    return 0


async def _serve(settings: GatewaySettings, ready_file: Path | None) -> None:
    from cloudai.master.tuning import tuned_process

    server = GatewayServer.from_settings(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
        async with tuned_process(
            gil_switch_interval=0.0005,
            gc_young_interval=0.1,
            gc_full_interval=300.0,
            gc_refresh_interval=3600.0,
        ):
            if ready_file is not None:
                server.write_ready_file(ready_file)
            await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        with contextlib.suppress(Exception):
            await server.stop()
        log.info("stopped")
