"""The master's HTTP server: telemetry WebSockets and /health (aiohttp).

Other route groups (the admin API, the dashboard, metrics) add themselves with
``add_routes(app)`` functions; this module only wires the telemetry endpoints.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from aiohttp import WSCloseCode, WSMsgType, web

from cloudai.master.ws_hub import TelemetryHub
from cloudai.telemetry.manager import TelemetryManager

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WebSocketConfig:
    ping_interval: float = 54.0
    client_timeout: float = 60.0
    compression: bool = False


HUB_KEY = web.AppKey("hub", TelemetryHub)
TELEMETRY_KEY = web.AppKey("telemetry", TelemetryManager)
WS_CONFIG_KEY = web.AppKey("ws_config", WebSocketConfig)


def create_app(
    telemetry: TelemetryManager, hub: TelemetryHub, ws_config: WebSocketConfig
) -> web.Application:
    app = web.Application()
    app[HUB_KEY] = hub
    app[TELEMETRY_KEY] = telemetry
    app[WS_CONFIG_KEY] = ws_config
    app.router.add_get("/health", health)
    app.router.add_get("/ws/telemetry", telemetry_stream)
    app.router.add_get("/ws/telemetry/{worker_id}", telemetry_stream)
    app.on_shutdown.append(_close_websockets)
    return app


async def health(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    workers, active = request.app[TELEMETRY_KEY].worker_count()
    return web.json_response(
        {
            "status": "healthy",
            "time": int(time.time()),
            "active_clients": hub.client_count,
            "workers": workers,
            "active_workers": active,
        }
    )


async def telemetry_stream(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB_KEY]
    config = request.app[WS_CONFIG_KEY]
    worker_id = request.match_info.get("worker_id")
    ws = web.WebSocketResponse(
        timeout=2.0,  # how long close() waits for the peer's close frame
        heartbeat=config.ping_interval,
        receive_timeout=config.client_timeout,
        compress=config.compression,
        max_msg_size=64 * 1024,
    )
    await ws.prepare(request)
    remote = request.remote or "?"
    # The request's transport is the one the WebSocket writes to: the hub writes frames
    # to it directly for a client that keeps up (uncompressed connections only).
    client = hub.connect(ws, worker_id, remote, transport=request.transport)
    log.debug("websocket client %s connected (worker=%s)", remote, worker_id or "*")
    try:
        # Clients have nothing to say; reading keeps pings/pongs and close frames flowing.
        while True:
            msg = await ws.receive()
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                break
    except TimeoutError:
        log.info("websocket client %s silent for %.0f s: dropped", remote, config.client_timeout)
        await hub.disconnect(client)
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"timeout")
    finally:
        await hub.disconnect(client)
    return ws


async def _close_websockets(app: web.Application) -> None:
    await app[HUB_KEY].close_all(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
    await asyncio.sleep(0)
