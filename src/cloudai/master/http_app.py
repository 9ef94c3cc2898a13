"""The master's HTTP server: telemetry WebSockets and /health (aiohttp).

Other route groups (the admin API, the dashboard, metrics) add themselves with
``add_routes(app)`` functions; this module only wires the telemetry endpoints.

WebSocket keepalive is ours, not aiohttp's ``heartbeat=``/``receive_timeout=``: their
timers run on the event loop's clock, so after the master was stopped (SIGSTOP, a long
GC, a VM pause) for longer than the timeout they fire at resume, before the client's
bytes waiting in the socket are read, and drop every dashboard. Here silence is measured
on a running clock (``LoopWatch``: a probe every 0.5 s whose lateness is time the master
was not running), and a client is dropped only when a ping sent by this master has gone
unanswered (``ClientKeepalive``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from aiohttp import WSCloseCode, WSMsgType, web

from cloudai.master import subscriptions
from cloudai.master.ws_hub import HubClient, TelemetryHub
from cloudai.telemetry.liveness import ClientKeepalive, KeepaliveAction, StallMeter
from cloudai.telemetry.manager import TelemetryManager

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WebSocketConfig:
    ping_interval: float = 54.0
    client_timeout: float = 60.0
    compression: bool = False


class LoopWatch:
    """A running clock for this event loop: ``running()`` stands still while the loop
    does not run (the process stopped or blocked). A probe task wakes every ``interval``
    and reports its lateness to a ``StallMeter``; lateness above ``threshold`` is stall."""

    def __init__(
        self,
        interval: float = 0.5,
        threshold: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self.meter = StallMeter(threshold)
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    def running(self) -> float:
        return self.meter.running(self._clock())

    @property
    def stalls(self) -> int:
        return self.meter.stalls

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._probe(), name="http-loop-watch"
            )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _probe(self) -> None:
        meter, clock, interval = self.meter, self._clock, self.interval
        while True:
            meter.expect(clock() + interval)
            await asyncio.sleep(interval)
            late = meter.fired(clock())
            if late > meter.threshold:
                log.info("the event loop was stalled for %.1f s", late)


HUB_KEY = web.AppKey("hub", TelemetryHub)
TELEMETRY_KEY = web.AppKey("telemetry", TelemetryManager)
WS_CONFIG_KEY = web.AppKey("ws_config", WebSocketConfig)
LOOP_WATCH_KEY = web.AppKey("loop_watch", LoopWatch)


def create_app(
    telemetry: TelemetryManager,
    hub: TelemetryHub,
    ws_config: WebSocketConfig,
    *,
    loop_watch: LoopWatch | None = None,
) -> web.Application:
    app = web.Application()
    app[HUB_KEY] = hub
    app[TELEMETRY_KEY] = telemetry
    app[WS_CONFIG_KEY] = ws_config
    app[LOOP_WATCH_KEY] = loop_watch or LoopWatch()
    app.router.add_get("/health", health)
    app.router.add_get("/ws/telemetry", telemetry_stream)
    app.router.add_get("/ws/telemetry/{worker_id}", telemetry_stream)
    app.cleanup_ctx.append(_run_loop_watch)
    app.on_shutdown.append(_close_websockets)
    return app


async def _run_loop_watch(app: web.Application) -> AsyncIterator[None]:
    watch = app[LOOP_WATCH_KEY]
    watch.start()
    yield
    await watch.stop()


async def health(request: web.Request) -> web.Response:
    """The original keys first; liveness counts after them. ``workers``: every worker the
    master knows with a history: seen since it started, or known from the store but not
    back yet (``unknown``); workers only authorised, never seen, are ``authorised_workers``."""
    hub = request.app[HUB_KEY]
    telemetry = request.app[TELEMETRY_KEY]
    counts = telemetry.liveness_counts()
    known = sum(n for state, n in counts.items() if state not in ("removed", "authorised"))
    active = counts["registered"] + counts["active"] + counts["suspect"]
    return web.json_response(
        {
            "status": "healthy",
            "time": int(time.time()),
            "active_clients": hub.client_count,
            "workers": known,
            "active_workers": active,
            "suspect_workers": counts["suspect"],
            "inactive_workers": counts["inactive"],
            "unknown_workers": counts["unknown"],
            "authorised_workers": counts["authorised"],
            "worker_connectivity": telemetry.connectivity.value,
            "connectivity_events": telemetry.stats.connectivity_events,
            "master_stalls": telemetry.stats.master_stalls,
        }
    )


async def telemetry_stream(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB_KEY]
    config = request.app[WS_CONFIG_KEY]
    worker_id = request.match_info.get("worker_id")
    watch = request.app[LOOP_WATCH_KEY]
    ws = web.WebSocketResponse(
        timeout=2.0,  # how long close() waits for the peer's close frame
        autoping=False,  # pings and pongs come to the read loop: they are signs of life
        compress=config.compression,
        max_msg_size=64 * 1024,
    )
    subscription = subscriptions.DEFAULT
    query_error: subscriptions.SubscriptionError | None = None
    if worker_id is None:
        try:
            subscription = subscriptions.parse_query(request.query)
        except subscriptions.SubscriptionError as exc:
            query_error = exc
    await ws.prepare(request)
    remote = request.remote or "?"
    if query_error is not None:
        # One error frame, then a policy-violation close whose reason says the same.
        hub.stats.control_errors += 1
        log.info("websocket client %s: bad subscription: %s", remote, query_error)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_str(subscriptions.error_frame(query_error).decode())
            await ws.close(
                code=WSCloseCode.POLICY_VIOLATION, message=str(query_error)[:120].encode()
            )
        return ws
    # The request's transport is the one the WebSocket writes to: the hub writes frames
    # to it directly for a client that keeps up; for a compressed connection it also
    # compresses them itself and waits on the connection's drain.
    client = hub.connect(
        ws,
        worker_id,
        remote,
        transport=request.transport,
        subscription=subscription,
        drain=request.writer.drain,
    )
    log.debug("websocket client %s connected (worker=%s)", remote, worker_id or "*")
    keepalive = ClientKeepalive(config.ping_interval, config.client_timeout, watch.running())
    try:
        # Reading keeps pings/pongs and close frames flowing; text messages are control
        # messages (subscribe, unsubscribe).
        while True:
            wait = max(keepalive.due() - watch.running(), 0.05)
            try:
                msg = await ws.receive(timeout=wait)
            except TimeoutError:
                action = keepalive.poll(watch.running())
                if action is KeepaliveAction.PING:
                    try:
                        await ws.ping()
                    except (ConnectionError, RuntimeError):
                        break
                elif action is KeepaliveAction.DROP:
                    log.info(
                        "websocket client %s silent for %.0f s and no answer to a ping: dropped",
                        remote,
                        config.client_timeout,
                    )
                    await hub.disconnect(client)
                    await ws.close(code=WSCloseCode.GOING_AWAY, message=b"timeout")
                    break
                continue
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                break
            keepalive.heard(watch.running())
            if msg.type is WSMsgType.TEXT or msg.type is WSMsgType.BINARY:
                _control(hub, client, msg.type, msg.data)
            elif msg.type is WSMsgType.PING:
                try:
                    await ws.pong(msg.data)
                except (ConnectionError, RuntimeError):
                    break
    finally:
        await hub.disconnect(client)
    return ws


def _control(hub: TelemetryHub, client: HubClient, kind: WSMsgType, data: str | bytes) -> None:
    """A control message from a client: applied and acknowledged, or answered with one
    error frame (and counted); never a traceback."""
    if client.worker_id is not None:
        hub.reject(client, "subscriptions are made on /ws/telemetry, not on one worker's stream")
        return
    if kind is WSMsgType.BINARY:
        hub.reject(client, "control messages are JSON text frames")
        return
    try:
        action, change = subscriptions.parse_control(data)
        updated = subscriptions.apply_change(client.subscription, action, change)
    except subscriptions.SubscriptionError as exc:
        hub.reject(client, str(exc), exc.code)
        log.debug("websocket client %s: bad control message: %s", client.remote, exc)
        return
    hub.resubscribe(client, updated)


async def _close_websockets(app: web.Application) -> None:
    await app[HUB_KEY].close_all(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
    await asyncio.sleep(0)
