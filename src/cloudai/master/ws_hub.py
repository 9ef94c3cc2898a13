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
connections take it too, with frames the hub compressed (below). The transport is the request's
(``web.BaseRequest.transport``, the one the WebSocket writes to), passed to ``connect``;
the hub uses only asyncio's public transport API on it (``write``, ``is_closing``,
``get_write_buffer_size``): a transport paused by flow control always holds buffered
bytes, so an empty write buffer also means "not paused". A tick reaches at most
DELIVERY_CHUNK clients per event-loop iteration, so a thousand clients never stall gRPC
for a whole tick's worth of socket writes.

The tick grows with the number of clients (``tick_interval``): every tick is one socket
write per client, so with many clients the tick lengthens to keep the writes under
``max_frame_rate`` a second. A few hundred clients keep the configured tick; a thousand
get fewer, larger frames instead of a machine too busy to send them. Under light load it
shrinks to nothing (``light_load_tick``): when a frame per update to every client stays
well under that rate, each update goes out at the next event-loop iteration.

Subscriptions (``master/subscriptions.py``): a client of ``/ws/telemetry`` may choose
workers, fields and topics. Clients that chose nothing share the tick's full frame as
before; the others are grouped by their normalised choice (``TelemetryKey``), and each
group's frame is encoded once per tick however many clients share it. Event topics
(``transitions``, ``alerts``, ``tasks``) are sent by ``publish``, encoded once per event.

Compression: a client that negotiated permessage-deflate gets frames the hub compressed
itself, without context takeover (each message compressed on its own, which RFC 7692
always allows), once per tick and group for every such client: so it keeps the fast path,
and the connection never holds aiohttp's per-connection compressor (~256 KB). Its writer
path compresses with the same function and writes to the transport, then waits for it to
drain (``request.writer.drain``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import WSCloseCode, WSMsgType, web

from cloudai.master.client_buffer import ClientBuffer
from cloudai.master.subscriptions import (
    DEFAULT,
    EVENT_TOPICS,
    TRANSITIONS,
    Selection,
    Subscription,
    TelemetryKey,
    WorkerSelector,
    ack_frame,
    error_frame,
    event_frame,
    project,
)
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
    subscription: Subscription = DEFAULT
    # The client's telemetry group: None for the default and per-worker clients, else the
    # _Group it shares frames with (_NO_TELEMETRY: events only). A tick's delivery skips a
    # client whose group changed since (it got a snapshot of its new choice instead).
    group: _Group | None = None
    deflate: int = 0  # permessage-deflate window bits when the hub compresses its frames
    drain: Callable[[], Awaitable[None]] | None = None  # the connection's drain (deflate)


@dataclass(eq=False)
class _Group:
    """Clients that chose the same workers and fields: one frame per tick for all."""

    key: TelemetryKey
    selector: WorkerSelector
    fields: Selection
    clients: set[HubClient] = field(default_factory=set)


_NO_TELEMETRY = _Group((None, None), WorkerSelector(None), None)  # events-only clients


@dataclass(slots=True)
class HubStats:
    frames_built: int = 0
    frames_sent: int = 0
    updates: int = 0
    send_errors: int = 0
    direct_sends: int = 0  # frames written by the fast path (included in frames_sent)
    bytes_sent: int = 0  # payload bytes of the frames sent (WebSocket headers not counted)
    coalesced_gone: int = 0  # coalesced updates of clients that have left (see coalesced())
    group_frames: int = 0  # frames built for subscription groups (one per group per tick)
    compressed_frames: int = 0  # deflate compressions (one per tick and group, or per send)
    compressed_sends: int = 0  # frames sent compressed (included in frames_sent)
    events_published: int = 0  # publish() calls that reached at least one client
    publish_errors: int = 0  # publish() payloads that could not be encoded
    control_messages: int = 0  # subscribe/unsubscribe messages applied
    control_errors: int = 0  # bad control messages or query parameters (answered with an error)


DELIVERY_CHUNK = 256  # client deliveries per event-loop iteration
MAX_FRAME_RATE = 40_000.0  # frames a second to all clients together


def tick_interval(batch_interval: float, clients: int, max_frame_rate: float) -> float:
    """The fan-out tick for ``clients``: the configured one, or longer so that one frame
    per client per tick stays under ``max_frame_rate``. 0 (no batching) stays 0."""
    if batch_interval <= 0:
        return 0.0
    return max(batch_interval, clients / max_frame_rate)


LIGHT_LOAD_SHARE = 0.5  # of max_frame_rate: below it, a frame per update (no tick)
RATE_WINDOW = 0.25  # seconds over which the update rate is measured


def light_load_tick(
    tick: float, clients: int, updates_per_s: float, max_frame_rate: float
) -> float:
    """The tick to wait before the next flush: none (the next event-loop iteration, which
    still merges what arrived together) when a frame per update to every client stays
    under ``LIGHT_LOAD_SHARE`` of ``max_frame_rate``: there is little to batch, and a tick
    would only add its length to every heartbeat's latency. Otherwise ``tick``."""
    if tick <= 0 or clients * updates_per_s <= max_frame_rate * LIGHT_LOAD_SHARE:
        return 0.0
    return tick


class UpdateRate:
    """Updates a second, measured over windows of at least ``RATE_WINDOW`` seconds from a
    running count (``observe`` is called once per tick, not per update)."""

    __slots__ = ("_count", "_since", "rate")

    def __init__(self) -> None:
        self.rate = 0.0
        self._since: float | None = None
        self._count = 0

    def observe(self, count: int, now: float) -> float:
        if self._since is None:
            self._since, self._count = now, count
        elif now - self._since >= RATE_WINDOW:
            self.rate = (count - self._count) / (now - self._since)
            self._since, self._count = now, count
        return self.rate


@dataclass(slots=True, eq=False)
class _Delivery:
    """One tick's frame on its way to a list of clients."""

    clients: list[HubClient]
    frame: bytes
    fragments: dict[str, bytes]
    group: _Group | None = None  # the clients' group when the job was made
    wire: bytes | None = None  # header + frame, built once for every direct write
    zwire: dict[int, bytes] | None = None  # window bits -> compressed header + frame
    next: int = 0  # index of the next client to serve


def ws_text_header(length: int) -> bytes:
    """RFC 6455 header of an unmasked, final text frame (what a server sends)."""
    if length < 126:
        return bytes((0x81, length))
    if length < 65536:
        return bytes((0x81, 126)) + length.to_bytes(2, "big")
    return bytes((0x81, 127)) + length.to_bytes(8, "big")


DEFLATE_LEVEL = zlib.Z_BEST_SPEED  # aiohttp's level too; JSON telemetry shrinks ~4-6x
_DEFLATE_TAIL = b"\x00\x00\xff\xff"


def ws_deflated_header(length: int) -> bytes:
    """RFC 6455 header of an unmasked, final, compressed (RSV1, RFC 7692) text frame."""
    return bytes((0xC1,)) + ws_text_header(length)[1:]


def deflate_message(payload: bytes, wbits: int) -> bytes:
    """``payload`` compressed as one permessage-deflate message without context takeover:
    a fresh compressor, a sync flush, the trailing ``00 00 ff ff`` removed (RFC 7692)."""
    compressor = zlib.compressobj(DEFLATE_LEVEL, zlib.DEFLATED, -wbits)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4] if data.endswith(_DEFLATE_TAIL) else data


def deflated_wire(payload: bytes, wbits: int) -> bytes:
    data = deflate_message(payload, wbits)
    return ws_deflated_header(len(data)) + data


def _direct_transport(
    ws: web.WebSocketResponse,
    transport: asyncio.WriteTransport | None,
    drain: Callable[[], Awaitable[None]] | None = None,
) -> asyncio.WriteTransport | None:
    """``transport`` if the hub may write frames to it itself: uncompressed WebSockets, and
    compressed ones whose drain it was given (it then compresses every frame itself)."""
    if transport is None:
        return None
    if ws.compress and (drain is None or not _hub_window(ws.compress)):
        return None
    return transport


def _hub_window(compress: int | bool) -> int:
    """The negotiated window bits if the hub can compress for it (zlib: 9..15), else 0."""
    wbits = int(compress)
    return wbits if 9 <= wbits <= 15 else 0


def _state_name(state: WorkerTelemetry) -> str:
    """The ``state`` a dashboard sees for ``state`` (as ``WorkerTelemetry.to_json``)."""
    return state.state or ("active" if state.is_active else "inactive")


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
        self._update_rate = UpdateRate()  # decides the light-load tick (light_load_tick)
        self._jobs: deque[_Delivery] = deque()
        self._delivering: asyncio.Handle | None = None
        self._clients: set[HubClient] = set()
        self._all: set[HubClient] = set()
        self._by_worker: dict[str, set[HubClient]] = {}
        self._groups: dict[TelemetryKey, _Group] = {}
        self._topics: dict[str, set[HubClient]] = {topic: set() for topic in EVENT_TOPICS}
        self._closing = False
        self.stats = HubStats()

    # -- input (a TelemetryManager subscriber) --------------------------------------------

    @subscribes_to(*ALL_EVENTS)
    def on_telemetry(self, state: WorkerTelemetry, event: TelemetryEvent) -> None:
        """Every event, liveness states included (suspect, unknown): a worker's latest
        state is what dashboards get, whatever changed it."""
        worker_id = state.worker_id
        if self._topics[TRANSITIONS]:
            self._transition(self._latest.get(worker_id), state)
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
            clients = len(self._clients)
            tick = light_load_tick(
                tick_interval(self.batch_interval, clients, self.max_frame_rate),
                clients,
                self._update_rate.observe(self.stats.updates, loop.time()),
                self.max_frame_rate,
            )
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
        if self._groups:
            self._flush_groups(batch)

    def _flush_groups(self, batch: dict[str, bytes]) -> None:
        """One frame per subscription group: its workers, projected to its fields. A
        worker's fragment is decoded at most once per tick, and projected at most once per
        distinct field list."""
        decoded: dict[str, Any] = {}
        projected: dict[tuple[str, Selection], bytes] = {}
        for group in self._groups.values():
            selector, fields = group.selector, group.fields
            chosen: dict[str, bytes] = {}
            for worker_id, fragment in batch.items():
                if not selector.matches(worker_id):
                    continue
                if fields is None:
                    chosen[worker_id] = fragment
                    continue
                key = (worker_id, fields)
                encoded = projected.get(key)
                if encoded is None:
                    obj = decoded.get(worker_id)
                    if obj is None:
                        obj = decoded[worker_id] = orjson.loads(b"{" + fragment + b"}")[worker_id]
                    encoded = projected[key] = orjson.dumps({worker_id: project(obj, fields)})[1:-1]
                chosen[worker_id] = encoded
            if chosen:
                self.stats.group_frames += 1
                self._deliver(group.clients, join_fragments(chosen.values()), chosen, group)

    def _transition(self, previous: WorkerTelemetry | None, state: WorkerTelemetry) -> None:
        """A ``transitions`` event when a worker's liveness state changed."""
        old = None if previous is None else _state_name(previous)
        new = _state_name(state)
        if new == old:
            return
        self.publish(
            TRANSITIONS,
            {
                "worker_id": state.worker_id,
                "from": old,
                "to": new,
                "is_active": state.is_active,
                "last_update": int(state.last_update),
            },
        )

    def _deliver(
        self,
        clients: set[HubClient],
        frame: bytes,
        fragments: dict[str, bytes],
        group: _Group | None = None,
    ) -> None:
        """Queue ``frame`` for ``clients``; the first DELIVERY_CHUNK get it at once."""
        self._jobs.append(_Delivery(list(clients), frame, fragments, group))
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
            group = job.group
            direct = deflated = deflated_bytes = 0
            for client in clients[start:end]:
                if client not in live or client.group is not group:
                    continue  # gone, or changed its subscription, since the tick
                transport = client.transport
                if (
                    transport is not None
                    and not client.sending
                    and client.buffer.is_empty
                    and not transport.get_write_buffer_size()  # empty: not paused either
                    and not transport.is_closing()
                    and not client.ws.closed
                ):
                    if client.deflate:
                        wire = self._deflated(job, client.deflate)
                        transport.write(wire)
                        deflated += 1
                        deflated_bytes += len(wire)
                    else:
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
            stats.compressed_sends += deflated
            stats.bytes_sent += (direct - deflated) * len(frame) + deflated_bytes
            budget -= end - start
            if end < len(clients):
                job.next = end
                break
            jobs.popleft()
        if jobs:
            self._delivering = asyncio.get_running_loop().call_soon(self._run_deliveries)

    def _deflated(self, job: _Delivery, wbits: int) -> bytes:
        """The job's frame compressed for ``wbits``: once per job, for all its clients."""
        if job.zwire is None:
            job.zwire = {}
        wire = job.zwire.get(wbits)
        if wire is None:
            wire = job.zwire[wbits] = deflated_wire(job.frame, wbits)
            self.stats.compressed_frames += 1
        return wire

    # -- clients --------------------------------------------------------------------------

    def snapshot(self, worker_id: str | None = None) -> dict[str, bytes]:
        if worker_id is None:
            return {w: self._fragment(state) for w, state in self._latest.items()}
        state = self._latest.get(worker_id)
        return {} if state is None else {worker_id: self._fragment(state)}

    def _snapshot_of(self, client: HubClient) -> dict[str, bytes]:
        """The fragments a new (or resubscribed) client starts from."""
        group = client.group
        if group is None:
            return self.snapshot(client.worker_id)
        selector, fields = group.selector, group.fields
        fragment_of = self._fragment
        chosen = {}
        for worker_id, state in self._latest.items():
            if selector.matches(worker_id):
                fragment = fragment_of(state)
                if fields is not None:
                    obj = orjson.loads(b"{" + fragment + b"}")[worker_id]
                    fragment = orjson.dumps({worker_id: project(obj, fields)})[1:-1]
                chosen[worker_id] = fragment
        return chosen

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
        subscription: Subscription = DEFAULT,
        drain: Callable[[], Awaitable[None]] | None = None,
    ) -> HubClient:
        """Add a client: its snapshot goes first, then every update.

        ``transport`` is the connection's transport (``request.transport`` once ``ws`` is
        prepared): with it, a client that keeps up gets the fast path; without it, every
        frame goes through the client's writer task. A client that negotiated
        permessage-deflate gets the fast path, and frames the hub compressed, only with
        ``drain`` too (the connection's ``request.writer.drain``). ``subscription``:
        what a client of every worker chose (a per-worker client keeps the default).
        """
        client = HubClient(ws=ws, worker_id=worker_id, remote=remote)
        client.transport = _direct_transport(ws, transport, drain)
        if client.transport is not None and ws.compress:
            client.deflate = _hub_window(ws.compress)
            client.drain = drain
        client.subscription = DEFAULT if worker_id is not None else subscription
        self._place(client)
        if client.subscription.wants_telemetry:
            fragments = self._snapshot_of(client)
            frame = join_fragments(fragments.values()) if fragments else EMPTY_FRAME
            client.buffer.offer(frame, fragments)
            client.wakeup.set()
        self._clients.add(client)
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
        if client in self._clients:
            self.stats.coalesced_gone += client.buffer.coalesced
        self._clients.discard(client)
        self._unplace(client)

    def _place(self, client: HubClient) -> None:
        """Put ``client`` where its subscription's frames are delivered."""
        subscription = client.subscription
        for topic in subscription.topics & EVENT_TOPICS:
            self._topics[topic].add(client)
        if client.worker_id is not None:
            client.group = None
            self._by_worker.setdefault(client.worker_id, set()).add(client)
            return
        key = subscription.telemetry_key
        if key is None:
            client.group = _NO_TELEMETRY
        elif key == (None, None):
            client.group = None
            self._all.add(client)
        else:
            group = self._groups.get(key)
            if group is None:
                group = self._groups[key] = _Group(key, WorkerSelector(key[0]), key[1])
            group.clients.add(client)
            client.group = group

    def _unplace(self, client: HubClient) -> None:
        for listeners in self._topics.values():
            listeners.discard(client)
        self._all.discard(client)
        if client.worker_id is not None:
            clients = self._by_worker.get(client.worker_id)
            if clients is not None:
                clients.discard(client)
                if not clients:
                    del self._by_worker[client.worker_id]
        group = client.group
        if group is not None and group is not _NO_TELEMETRY:
            group.clients.discard(client)
            if not group.clients and self._groups.get(group.key) is group:
                del self._groups[group.key]

    def resubscribe(self, client: HubClient, subscription: Subscription) -> None:
        """Apply a client's new choice: an acknowledgement (``{"topic": "subscription",
        ...}``) goes first; when its telemetry choice changed, a snapshot of the new choice
        follows, replacing whatever telemetry was still waiting for it."""
        if client not in self._clients:
            return
        old_key = client.subscription.telemetry_key
        self._unplace(client)
        client.subscription = subscription
        self._place(client)
        self.stats.control_messages += 1
        self.send_to(client, ack_frame(subscription))
        if subscription.telemetry_key == old_key:
            return
        if subscription.wants_telemetry:
            fragments = self._snapshot_of(client)
            frame = join_fragments(fragments.values()) if fragments else EMPTY_FRAME
            if client.buffer.replace(frame, fragments):
                client.wakeup.set()
        else:
            client.buffer.drop_telemetry()

    def reject(self, client: HubClient, message: str, code: str = "bad_control") -> None:
        """A bad control message: one error frame to its client, counted."""
        self.stats.control_errors += 1
        self.send_to(client, error_frame(message, code))

    def send_to(self, client: HubClient, frame: bytes) -> None:
        """One frame to one client: written at once if it keeps up, else queued (in
        order, before pending telemetry) for its writer."""
        if client not in self._clients:
            return
        transport = client.transport
        if (
            transport is not None
            and not client.sending
            and client.buffer.is_empty
            and not transport.get_write_buffer_size()
            and not transport.is_closing()
            and not client.ws.closed
        ):
            if client.deflate:
                wire = deflated_wire(frame, client.deflate)
                self.stats.compressed_frames += 1
                self.stats.compressed_sends += 1
                self.stats.bytes_sent += len(wire)
            else:
                wire = ws_text_header(len(frame)) + frame
                self.stats.bytes_sent += len(frame)
            transport.write(wire)
            client.frames_sent += 1
            client.direct_sends += 1
            self.stats.frames_sent += 1
            self.stats.direct_sends += 1
        elif client.buffer.offer_event(frame):
            client.wakeup.set()

    def subscribed(self, topic: str) -> bool:
        """Whether any client listens to the event ``topic`` (so an event is worth building)."""
        return bool(self._topics.get(topic))

    def publish(self, topic: str, event: Mapping[str, Any]) -> int:
        """Send ``{"topic": topic, "event": event}`` to every client subscribed to
        ``topic`` (``transitions``, ``alerts`` or ``tasks``), encoded once. Returns how
        many clients it went to. Never raises for a payload JSON cannot carry: that is
        logged and counted (``publish_errors``)."""
        clients = self._topics.get(topic)
        if clients is None:
            raise ValueError(f"unknown topic {topic!r}; topics: {', '.join(sorted(EVENT_TOPICS))}")
        if not clients:
            return 0
        try:
            frame = event_frame(topic, event)
        except TypeError as exc:
            self.stats.publish_errors += 1
            log.warning("event on topic %s not sent: %s", topic, exc)
            return 0
        self.stats.events_published += 1
        for client in list(clients):
            self.send_to(client, frame)
        return len(clients)

    def events_dropped(self) -> int:
        """Event frames dropped for clients too slow to take them (connected clients)."""
        return sum(c.buffer.events_dropped for c in self._clients)

    @property
    def subscription_groups(self) -> int:
        """Distinct subscriptions being encoded (the default one not counted)."""
        return len(self._groups)

    @property
    def client_count(self) -> int:
        return len(self._clients)

    def coalesced(self) -> int:
        """Worker updates that slow clients never received because a newer one replaced
        them in their buffer (clients gone included): a growing count."""
        return self.stats.coalesced_gone + sum(c.buffer.coalesced for c in self._clients)

    def clients_behind(self) -> int:
        """Clients with frames waiting in their buffer or a send in progress now."""
        return sum(1 for c in self._clients if c.sending or not c.buffer.is_empty)

    async def _write_loop(self, client: HubClient) -> None:
        ws, buffer, wakeup = client.ws, client.buffer, client.wakeup
        try:
            while True:
                await wakeup.wait()
                wakeup.clear()
                while (frame := buffer.take()) is not None:
                    client.sending = True
                    if client.deflate:
                        await self._send_deflated(client, frame)
                    else:
                        await ws.send_frame(frame, WSMsgType.TEXT)
                        self.stats.bytes_sent += len(frame)
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

    async def _send_deflated(self, client: HubClient, frame: bytes) -> None:
        """The writer path of a client whose frames the hub compresses: the frame on its
        own (no context takeover), written to the transport, then the drain awaited."""
        transport, drain = client.transport, client.drain
        assert transport is not None and drain is not None  # set together in connect
        if transport.is_closing() or client.ws.closed:
            raise ConnectionResetError("the connection is closing")
        wire = deflated_wire(frame, client.deflate)
        self.stats.compressed_frames += 1
        self.stats.compressed_sends += 1
        self.stats.bytes_sent += len(wire)
        transport.write(wire)
        await drain()

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
