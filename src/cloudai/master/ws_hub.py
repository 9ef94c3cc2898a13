"""TelemetryHub: fans telemetry out to WebSocket clients.

Updates from the TelemetryManager are encoded once (a fragment per worker) and
collected for one short tick (``batch_interval``); at the end of the tick one frame
carrying every worker that changed is built once and offered to every client. Each
client has a bounded, per-worker coalescing ClientBuffer and its own writer task, so a
slow client never blocks the manager, the RPC path or other clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from aiohttp import WSCloseCode, WSMsgType, web

from cloudai.master.client_buffer import ClientBuffer
from cloudai.telemetry.encoding import EMPTY_FRAME, encode_fragment, join_fragments
from cloudai.telemetry.manager import TelemetryEvent
from cloudai.telemetry.model import WorkerTelemetry

log = logging.getLogger(__name__)


@dataclass(eq=False)
class HubClient:
    ws: web.WebSocketResponse
    worker_id: str | None  # None: every worker
    remote: str
    buffer: ClientBuffer = field(default_factory=ClientBuffer)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    writer: asyncio.Task[None] | None = None
    frames_sent: int = 0


@dataclass(slots=True)
class HubStats:
    frames_built: int = 0
    frames_sent: int = 0
    updates: int = 0
    send_errors: int = 0


class TelemetryHub:
    def __init__(self, batch_interval: float = 0.005) -> None:
        self.batch_interval = batch_interval
        self._latest: dict[str, bytes] = {}  # worker id -> latest fragment (the snapshot)
        self._batch: dict[str, bytes] = {}
        self._flush_handle: asyncio.Handle | None = None
        self._clients: set[HubClient] = set()
        self._all: set[HubClient] = set()
        self._by_worker: dict[str, set[HubClient]] = {}
        self._closing = False
        self.stats = HubStats()

    # -- input (a TelemetryManager subscriber) --------------------------------------------

    def on_telemetry(self, state: WorkerTelemetry, event: TelemetryEvent) -> None:
        fragment = encode_fragment(state)
        worker_id = state.worker_id
        if event is TelemetryEvent.REMOVED:
            self._latest.pop(worker_id, None)
        else:
            self._latest[worker_id] = fragment
        self.stats.updates += 1
        if not self._clients:
            return
        self._batch[worker_id] = fragment
        if self._flush_handle is None:
            loop = asyncio.get_running_loop()
            if self.batch_interval > 0:
                self._flush_handle = loop.call_later(self.batch_interval, self.flush)
            else:
                self._flush_handle = loop.call_soon(self.flush)

    def flush(self) -> None:
        """Offer the current tick's updates to every client (one encode for all)."""
        self._flush_handle = None
        batch, self._batch = self._batch, {}
        if not batch:
            return
        self.stats.frames_built += 1
        if self._all:
            frame = join_fragments(batch.values())
            for client in self._all:
                if client.buffer.offer(frame, batch):
                    client.wakeup.set()
        if self._by_worker:
            for worker_id, fragment in batch.items():
                clients = self._by_worker.get(worker_id)
                if not clients:
                    continue
                single = {worker_id: fragment}
                frame = join_fragments((fragment,))
                for client in clients:
                    if client.buffer.offer(frame, single):
                        client.wakeup.set()

    # -- clients --------------------------------------------------------------------------

    def snapshot(self, worker_id: str | None = None) -> dict[str, bytes]:
        if worker_id is None:
            return dict(self._latest)
        fragment = self._latest.get(worker_id)
        return {} if fragment is None else {worker_id: fragment}

    def connect(self, ws: web.WebSocketResponse, worker_id: str | None, remote: str) -> HubClient:
        """Add a client: its snapshot goes first, then every update."""
        client = HubClient(ws=ws, worker_id=worker_id, remote=remote)
        fragments = self.snapshot(worker_id)
        frame = join_fragments(fragments.values()) if fragments else EMPTY_FRAME
        client.buffer.offer(frame, fragments)
        client.wakeup.set()
        self._clients.add(client)
        if worker_id is None:
            self._all.add(client)
        else:
            self._by_worker.setdefault(worker_id, set()).add(client)
        client.writer = asyncio.get_running_loop().create_task(
            self._write_loop(client), name=f"ws-writer-{remote}"
        )
        return client

    async def disconnect(self, client: HubClient) -> None:
        self._forget(client)
        if client.writer is not None and client.writer is not asyncio.current_task():
            client.writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await client.writer

    def _forget(self, client: HubClient) -> None:
        self._clients.discard(client)
        self._all.discard(client)
        if client.worker_id is not None:
            clients = self._by_worker.get(client.worker_id)
            if clients is not None:
                clients.discard(client)
                if not clients:
                    del self._by_worker[client.worker_id]

    @property
    def client_count(self) -> int:
        return len(self._clients)

    async def _write_loop(self, client: HubClient) -> None:
        ws, buffer, wakeup = client.ws, client.buffer, client.wakeup
        try:
            while True:
                await wakeup.wait()
                wakeup.clear()
                frame = buffer.take()
                if frame is None:
                    continue
                await ws.send_frame(frame, WSMsgType.TEXT)
                client.frames_sent += 1
                self.stats.frames_sent += 1
        except (ConnectionError, RuntimeError) as exc:
            # The peer went away mid-send; the handler's read loop sees it and cleans up.
            self.stats.send_errors += 1
            log.debug("websocket client %s: send failed: %s", client.remote, exc)
            self._forget(client)
            with contextlib.suppress(Exception):
                await ws.close(code=WSCloseCode.GOING_AWAY)

    async def close_all(self, code: int = WSCloseCode.GOING_AWAY, message: bytes = b"") -> None:
        """Shutdown: flush what is pending, then send every client a close frame."""
        self._closing = True
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        clients = list(self._clients)
        for client in clients:
            self._forget(client)
            if client.writer is not None:
                client.writer.cancel()
        await asyncio.gather(
            *(c.writer for c in clients if c.writer is not None), return_exceptions=True
        )
        await asyncio.gather(
            *(_close_quietly(c.ws, code, message) for c in clients), return_exceptions=True
        )


async def _close_quietly(ws: web.WebSocketResponse, code: int, message: bytes) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(ws.close(code=code, message=message), timeout=1.0)
