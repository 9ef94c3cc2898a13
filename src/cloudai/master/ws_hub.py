"""TelemetryHub: fans telemetry out to WebSocket clients.

Updates from the TelemetryManager are collected for one short tick
(``batch_interval``); at the end of the tick each changed worker's latest state is
encoded once (a fragment) and one frame carrying every worker that changed is built
once and offered to every client. While no client is connected nothing is encoded; a
snapshot encodes what it needs on demand. Each client has a bounded, per-worker
coalescing ClientBuffer and its own writer task, so a slow client never blocks the
manager, the RPC path or other clients.

Fast path: a client that keeps up (nothing in its buffer, its writer idle, nothing
waiting in its transport's write buffer, the transport not closing) gets the tick's
frame written straight to its transport, the WebSocket frame header included, built once
per tick for all such clients. That skips a task wake-up and aiohttp's per-send framing
(about half the master's CPU per delivery). Any other client goes through its buffer and
writer task as before, so order, coalescing and back-pressure are unchanged. Compressed
connections always take the writer path. The transport is the request's
(``web.BaseRequest.transport``, the one the WebSocket writes to), passed to ``connect``;
the hub uses only asyncio's public transport API on it (``write``, ``is_closing``,
``get_write_buffer_size``): a transport paused by flow control always holds buffered
bytes, so an empty write buffer also means "not paused". A tick reaches at most
DELIVERY_CHUNK clients per event-loop iteration, so a thousand clients never stall gRPC
for a whole tick's worth of socket writes.

The tick grows with the number of clients (``tick_interval``): every tick is one socket
write per client, so with many clients the tick lengthens to keep the writes under
``max_frame_rate`` a second. A few hundred clients keep the configured tick; a thousand
get fewer, larger frames instead of a machine too busy to send them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass, field

from aiohttp import WSCloseCode, WSMsgType, web

from cloudai.master.client_buffer import ClientBuffer
from cloudai.telemetry.encoding import EMPTY_FRAME, encode_fragment, join_fragments
from cloudai.telemetry.manager import ALL_EVENTS, TelemetryEvent, subscribes_to
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
    direct_sends: int = 0  # frames the fast path wrote (included in frames_sent)
    sending: bool = False  # the writer task is inside a send (possibly waiting to drain)
    transport: asyncio.WriteTransport | None = None  # set when direct writes are possible


@dataclass(slots=True)
class HubStats:
    frames_built: int = 0
    frames_sent: int = 0
    updates: int = 0
    send_errors: int = 0
    direct_sends: int = 0  # frames written by the fast path (included in frames_sent)


DELIVERY_CHUNK = 256  # client deliveries per event-loop iteration
MAX_FRAME_RATE = 40_000.0  # frames a second to all clients together


def tick_interval(batch_interval: float, clients: int, max_frame_rate: float) -> float:
    """The fan-out tick for ``clients``: the configured one, or longer so that one frame
    per client per tick stays under ``max_frame_rate``. 0 (no batching) stays 0."""
    if batch_interval <= 0:
        return 0.0
    return max(batch_interval, clients / max_frame_rate)


@dataclass(slots=True, eq=False)
class _Delivery:
    """One tick's frame on its way to a list of clients."""

    clients: list[HubClient]
    frame: bytes
    fragments: dict[str, bytes]
    wire: bytes | None = None  # header + frame, built once for every direct write
    next: int = 0  # index of the next client to serve


def ws_text_header(length: int) -> bytes:
    """RFC 6455 header of an unmasked, final text frame (what a server sends)."""
    if length < 126:
        return bytes((0x81, length))
    if length < 65536:
        return bytes((0x81, 126)) + length.to_bytes(2, "big")
    return bytes((0x81, 127)) + length.to_bytes(8, "big")


def _direct_transport(
    ws: web.WebSocketResponse, transport: asyncio.WriteTransport | None
) -> asyncio.WriteTransport | None:
    """``transport`` if the hub may write frames to it itself: uncompressed WebSockets only
    (a compressed one keeps per-connection deflate state that only aiohttp may advance)."""
    if transport is None or ws.compress:
        return None
    return transport


class TelemetryHub:
    def __init__(
        self, batch_interval: float = 0.005, max_frame_rate: float = MAX_FRAME_RATE
    ) -> None:
        if not max_frame_rate > 0:
            raise ValueError(f"max_frame_rate must be > 0, got {max_frame_rate!r}")
        self.batch_interval = batch_interval
        self.max_frame_rate = max_frame_rate
        # The latest state per worker (the snapshot) and its fragment, encoded on demand:
        # once per tick when clients are connected, never while nobody listens.
        self._latest: dict[str, WorkerTelemetry] = {}
        self._encoded: dict[str, tuple[WorkerTelemetry, bytes]] = {}
        self._batch: dict[str, WorkerTelemetry] = {}
        self._flush_handle: asyncio.Handle | None = None
        self._jobs: deque[_Delivery] = deque()
        self._delivering: asyncio.Handle | None = None
        self._clients: set[HubClient] = set()
        self._all: set[HubClient] = set()
        self._by_worker: dict[str, set[HubClient]] = {}
        self._closing = False
        self.stats = HubStats()

    # -- input (a TelemetryManager subscriber) --------------------------------------------

    @subscribes_to(*ALL_EVENTS)
    def on_telemetry(self, state: WorkerTelemetry, event: TelemetryEvent) -> None:
        """Every event, liveness states included (suspect, unknown): a worker's latest
        state is what dashboards get, whatever changed it."""
        worker_id = state.worker_id
        if event is TelemetryEvent.REMOVED:
            self._latest.pop(worker_id, None)
            self._encoded.pop(worker_id, None)
        else:
            self._latest[worker_id] = state  # published states are never mutated
        self.stats.updates += 1
        if not self._clients:
            return
        self._batch[worker_id] = state
        if self._flush_handle is None:
            loop = asyncio.get_running_loop()
            tick = tick_interval(self.batch_interval, len(self._clients), self.max_frame_rate)
            if tick > 0:
                self._flush_handle = loop.call_later(tick, self.flush)
            else:
                self._flush_handle = loop.call_soon(self.flush)

    def flush(self) -> None:
        """Offer the current tick's updates to every client (one encode for all)."""
        self._flush_handle = None
        states, self._batch = self._batch, {}
        if not states:
            return
        fragment_of = self._fragment
        batch = {worker_id: fragment_of(state) for worker_id, state in states.items()}
        self.stats.frames_built += 1
        if self._all:
            self._deliver(self._all, join_fragments(batch.values()), batch)
        if self._by_worker:
            for worker_id, fragment in batch.items():
                clients = self._by_worker.get(worker_id)
                if clients:
                    self._deliver(clients, join_fragments((fragment,)), {worker_id: fragment})

    def _deliver(self, clients: set[HubClient], frame: bytes, fragments: dict[str, bytes]) -> None:
        """Queue ``frame`` for ``clients``; the first DELIVERY_CHUNK get it at once."""
        self._jobs.append(_Delivery(list(clients), frame, fragments))
        if self._delivering is None:
            self._run_deliveries()

    def _run_deliveries(self) -> None:
        """Deliver up to DELIVERY_CHUNK frames, then yield to the event loop if more wait.

        With a thousand clients one tick is a thousand socket writes (~10 ms): done in one
        go they would stall gRPC for that long every tick. Jobs run in order, so every
        client still receives its frames in order.
        """
        self._delivering = None
        budget = DELIVERY_CHUNK
        jobs = self._jobs
        live = self._clients
        stats = self.stats
        while jobs and budget > 0:
            job = jobs[0]
            clients = job.clients
            start = job.next
            end = min(len(clients), start + budget)
            frame = job.frame
            direct = 0
            for client in clients[start:end]:
                if client not in live:
                    continue  # gone since the tick
                transport = client.transport
                if (
                    transport is not None
                    and not client.sending
                    and client.buffer.is_empty
                    and not transport.get_write_buffer_size()  # empty: not paused either
                    and not transport.is_closing()
                    and not client.ws.closed
                ):
                    if job.wire is None:
                        job.wire = ws_text_header(len(frame)) + frame
                    transport.write(job.wire)
                    client.frames_sent += 1
                    client.direct_sends += 1
                    direct += 1
                elif client.buffer.offer(frame, job.fragments):
                    client.wakeup.set()
            stats.frames_sent += direct
            stats.direct_sends += direct
            budget -= end - start
            if end < len(clients):
                job.next = end
                break
            jobs.popleft()
        if jobs:
            self._delivering = asyncio.get_running_loop().call_soon(self._run_deliveries)

    # -- clients --------------------------------------------------------------------------

    def snapshot(self, worker_id: str | None = None) -> dict[str, bytes]:
        if worker_id is None:
            return {w: self._fragment(state) for w, state in self._latest.items()}
        state = self._latest.get(worker_id)
        return {} if state is None else {worker_id: self._fragment(state)}

    def _fragment(self, state: WorkerTelemetry) -> bytes:
        """The state's encoded fragment; a worker's latest one is encoded only once."""
        worker_id = state.worker_id
        cached = self._encoded.get(worker_id)
        if cached is not None and cached[0] is state:
            return cached[1]
        fragment = encode_fragment(state)
        if self._latest.get(worker_id) is state:
            self._encoded[worker_id] = (state, fragment)
        return fragment

    def connect(
        self,
        ws: web.WebSocketResponse,
        worker_id: str | None,
        remote: str,
        *,
        transport: asyncio.WriteTransport | None = None,
    ) -> HubClient:
        """Add a client: its snapshot goes first, then every update.

        ``transport`` is the connection's transport (``request.transport`` once ``ws`` is
        prepared): with it, an uncompressed client that keeps up gets the fast path;
        without it, every frame goes through the client's writer task.
        """
        client = HubClient(ws=ws, worker_id=worker_id, remote=remote)
        client.transport = _direct_transport(ws, transport)
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
                client.sending = True
                await ws.send_frame(frame, WSMsgType.TEXT)
                client.sending = False
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
        if self._delivering is not None:
            self._delivering.cancel()
            self._delivering = None
        self._jobs.clear()
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
