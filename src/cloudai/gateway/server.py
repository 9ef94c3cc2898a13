"""The gateway's assembly and process: ``GatewayServer`` runs its stages in order and
stops them in reverse; ``run_gateway`` owns the process (uvloop, signals, ready file).

Stages::

    bus         connect to NATS, with this gateway's own inbox (the master's answers to
                its calls: _INBOX.<prefix>.gw.<id>.>); session events from the master
                (forget / reset / removed / tokens)
    telemetry   with --ws-port: a TelemetryManager fed by every worker's heartbeats from
                the bus, the master's TelemetryHub and HTTP app on it (/ws/telemetry,
                /health): the same code, so the same JSON contract as the master. In
                secure mode over TLS (the gateway's certificate) with the master's token
                policy (``install_auth``), on a copy of the master's API tokens
                (gateway/tokens.py); a worker the master unregistered is removed as the
                master removes it (its clients get the same last message)
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
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from aiohttp import web
from google.protobuf.message import DecodeError

from cloudai.addresses import join_host_port
from cloudai.bus.base import Bus, BusUnavailable, Delivery
from cloudai.bus.codec import BusDecodeError, decode_session_event, decode_telemetry
from cloudai.bus.nats_bus import NatsBus
from cloudai.bus.subjects import Subjects
from cloudai.gateway.service import GatewayService
from cloudai.gateway.sessions import SessionCache
from cloudai.gateway.settings import GatewaySettings
from cloudai.gateway.tokens import TokenRefresher, TokenTable, bus_fetch
from cloudai.loop import event_loop_factory
from cloudai.master.http_app import WebSocketConfig, create_app
from cloudai.master.http_auth import install_auth, server_ssl_context
from cloudai.master.ws_hub import TelemetryHub
from cloudai.proto import pb
from cloudai.proto.options import grpc_server_options
from cloudai.proto.tolerant import add_master_rpcs
from cloudai.security import pki
from cloudai.telemetry.manager import TelemetryManager

log = logging.getLogger(__name__)

REMOVED_GRACE = 5.0
"""Seconds after a worker's removal during which its heartbeats from the bus are dropped:
one another gateway published before it learnt of the removal would show it again."""


def gateway_server_options(settings: GatewaySettings) -> list[tuple[str, int]]:
    """The master's gRPC server options, with SO_REUSEPORT as the settings say."""
    options = [
        o for o in grpc_server_options(settings.max_message_bytes) if o[0] != "grpc.so_reuseport"
    ]
    options.append(("grpc.so_reuseport", 1 if settings.reuse_port else 0))
    return options


def check_gateway_certificate(cert_pem: bytes, gateway_id: str) -> None:
    """``PkiError`` (one line) unless ``cert_pem`` is this gateway's own certificate: the
    gateway role (never the master's: a gateway must not hold a key that may call
    workers) and this gateway's id."""
    role, cert_id = pki.identity(pki.load_cert(cert_pem))
    issue = f"issue one with `cloudai gateway --issue-tls-dir DIR --id {gateway_id}`"
    if role != "gateway":
        raise pki.PkiError(
            f"gateway.pem is not a gateway's certificate (its role: {role}); {issue}"
        )
    if cert_id != gateway_id:
        raise pki.PkiError(
            f"gateway.pem is gateway {cert_id!r}'s certificate, and this is gateway "
            f"{gateway_id!r} (--id); {issue}"
        )


def server_credentials(tls_dir: Path, gateway_id: str) -> grpc.ServerCredentials:
    """Mutual TLS: the gateway's certificate (the gRPC name workers check), and workers
    must show a certificate of the cluster CA (who each is, the master checks per call)."""
    cert_pem = (tls_dir / "gateway.pem").read_bytes()
    check_gateway_certificate(cert_pem, gateway_id)
    return grpc.ssl_server_credentials(
        [((tls_dir / "gateway.key").read_bytes(), cert_pem)],
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
    tokens: TokenRefresher | None = None  # secure mode with --ws-port
    grpc_port: int | None = None
    http_port: int | None = None
    _grpc: grpc.aio.Server | None = None
    _http: web.AppRunner | None = None
    _started: list[Stage] = field(default_factory=list)
    bus_invalid: int = 0  # messages on the bus that did not decode
    removed_dropped: int = 0  # heartbeats of a worker just removed, dropped
    _removed: dict[str, float] = field(default_factory=dict)  # worker -> when (monotonic)

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> GatewayServer:
        subjects = Subjects(settings.bus_prefix)
        bus = NatsBus.from_settings(
            settings,
            name=f"cloudai-gateway-{settings.gateway_id}",
            inbox_prefix=subjects.gateway_inbox(settings.gateway_id),
        )
        return cls(settings, bus, subjects)

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
        log.info(
            "bus: the master's answers to this gateway arrive on %s.>",
            self.subjects.gateway_inbox(self.settings.gateway_id),
        )
        self.service = GatewayService(
            self.settings.gateway_id,
            self.bus,
            self.subjects,
            self.sessions,
            call_timeout=self.settings.call_timeout,
        )
        await self.bus.subscribe(self.subjects.sessions, self._on_session_event)

    async def _stop_bus(self) -> None:
        await self.bus.close()

    async def _on_session_event(self, msg: Delivery) -> None:
        assert self.service is not None
        try:
            event = decode_session_event(msg.data)
        except BusDecodeError:
            self.service.stats.invalid_messages += 1
            return
        self.service.session_event(event)
        if event.removed is not None and self.telemetry is not None:
            self._removed_worker(event.removed)
        if (event.tokens is not None or event.reset is not None) and self.tokens is not None:
            self.tokens.refresh_soon()

    def _removed_worker(self, worker_id: str) -> None:
        """The master unregistered the worker: gone from this gateway's WebSockets too."""
        assert self.telemetry is not None
        if len(self._removed) > 100_000:
            self._removed.clear()
        self._removed[worker_id] = time.monotonic()
        self.telemetry.unregister_worker(worker_id)

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
        ssl_context = None
        try:
            if not settings.insecure and settings.tls_dir is not None:
                # The master's token policy, on a copy of its tokens; WSS only.
                ssl_context = server_ssl_context(
                    settings.tls_dir / "gateway.pem", settings.tls_dir / "gateway.key"
                )
                table = TokenTable()
                who = f"gateway {settings.gateway_id}"
                self.tokens = TokenRefresher(
                    table, bus_fetch(self.bus, self.subjects, who, settings.call_timeout)
                )
                install_auth(app, table.authenticate)
                await self.tokens.start()
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
        except BaseException:
            await self._stop_telemetry()
            raise
        try:
            site = web.TCPSite(
                runner,
                settings.ws_host,
                settings.ws_port,
                reuse_address=True,
                ssl_context=ssl_context,
            )
            await site.start()
        except BaseException:
            await runner.cleanup()
            await self._stop_telemetry()
            raise
        self._http = runner
        self.http_port = int(runner.addresses[0][1])
        log.info(
            "%s listening on %s (WebSocket /ws/telemetry: every worker, from the bus%s)",
            "HTTPS" if ssl_context is not None else "HTTP",
            join_host_port(settings.ws_host, self.http_port),
            "; the master's API tokens" if ssl_context is not None else "",
        )

    async def _on_telemetry(self, msg: Delivery) -> None:
        assert self.telemetry is not None
        try:
            _received_at, raw = decode_telemetry(msg.data)
            heartbeat = pb.Heartbeat.FromString(raw)
        except (BusDecodeError, DecodeError):
            self.bus_invalid += 1
            return
        if self._removed and self._just_removed(heartbeat.worker_id):
            self.removed_dropped += 1
            return
        self.telemetry.process_heartbeat(heartbeat)

    def _just_removed(self, worker_id: str) -> bool:
        removed_at = self._removed.get(worker_id)
        if removed_at is None:
            return False
        if time.monotonic() - removed_at < REMOVED_GRACE:
            return True
        del self._removed[worker_id]
        return False

    async def _stop_telemetry(self) -> None:
        runner, self._http = self._http, None
        if runner is not None:
            await runner.cleanup()
        if self.tokens is not None:
            await self.tokens.stop()
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
                credentials = server_credentials(settings.tls_dir, settings.gateway_id)
                port = server.add_secure_port(address, credentials)
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
        except (OSError, BusUnavailable, pki.PkiError) as exc:
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
