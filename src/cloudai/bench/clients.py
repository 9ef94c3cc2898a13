"""A client process: simulates dashboards on the telemetry WebSocket.

Lifecycle, driven by the coordinator over a pipe: connect every client and wait for its
snapshot -> ``ready`` -> ``start`` (trackers begin; slow clients pause and resume on
schedule) -> ``stop`` after the drain -> each client's figures -> ``result``.

Tracked clients parse every frame (tags, latency, gaps); the others only count worker
entries, so a thousand clients cost the machine little more than the master's sends.

``--subscriptions N`` spreads the clients over N distinct subscriptions that each select
every simulated worker (``?workers=bench-*,unused-K``): the master encodes N frames per
tick instead of one, and every client still gets every worker, so the trackers work as
without subscriptions. ``--ws-deflate``: the clients negotiate permessage-deflate
(aiohttp's client, ``bench/deflate_client.py``); each client's bytes on the wire are read
from the kernel (TCP_INFO) either way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from cloudai.bench import deflate_client, wsclient
from cloudai.bench.config import BenchConfig
from cloudai.bench.enrol import MasterAccess
from cloudai.bench.histogram import Histogram
from cloudai.bench.runtime import receive, run_async
from cloudai.bench.schedule import Layout, worker_ids
from cloudai.bench.shared import SharedArrays
from cloudai.bench.tracking import Tracker, count_workers

CONNECT_BATCH = 100
PING_INTERVAL = 20.0  # client pings keep paused clients within the server's idle timeout
SLOW_RECEIVE_BUFFER = 64 * 1024
QUIET_IDLE = 0.3  # after the drain, wait until clients read nothing for this long
QUIET_TIMEOUT = 20.0


@dataclass(slots=True)
class ClientSpec:
    index: int
    config: BenchConfig
    ws_host: str
    ws_port: int
    ws_path: str
    shared_path: str
    capacity: int
    normal: int  # clients that keep up
    tracked: int  # how many of them are tracked
    slow: int  # clients that pause (always tracked)
    access: MasterAccess | None = None  # --tls: WSS with the CA and the admin token
    first_index: int = 0  # this process's first client's index in the run (subscriptions)


class _Counter:
    """An untracked client's state: worker entries received while active."""

    __slots__ = ("active", "entries")

    def __init__(self) -> None:
        self.entries = 0
        self.active = False


def subscription_path(path: str, prefix: str, subscriptions: int, index: int) -> str:
    """The stream path of client ``index`` (of the whole run) for ``--subscriptions``:
    subscription ``index % subscriptions``, each selecting every worker ``prefix*``; 0:
    ``path`` as is (no subscription: today's stream)."""
    if subscriptions <= 0:
        return path
    k = index % subscriptions
    workers = f"{prefix}*" if subscriptions == 1 else f"{prefix}*,unused-{k}"
    return f"{path}?workers={quote(workers, safe='*,')}"


Client = wsclient.WsClient | deflate_client.DeflateClient


def wire_bytes(clients: Sequence[Client]) -> int | None:
    """Bytes the kernel received on these clients' sockets, None if unknown."""
    total = 0
    for client in clients:
        received = wsclient.tcp_bytes_received(client.sock)
        if received is None:
            return None
        total += received
    return total


def _on_message(client: Any, payload: bytes, received_at: float) -> None:
    state = client.tag
    if type(state) is _Counter:
        if state.active:
            state.entries += count_workers(payload)
    else:
        state.on_frame(payload, received_at)


class ClientGroup:
    def __init__(self, spec: ClientSpec, shared: SharedArrays) -> None:
        self.spec = spec
        self.shared = shared
        config = spec.config
        ids = worker_ids(config.workers, config.worker_prefix)
        self.index_of = {worker_id.encode(): i for i, worker_id in enumerate(ids)}
        self.layout = Layout(config.workers, config.gen_count)
        self.normal: list[Client] = []
        self.slow: list[Client] = []
        self.failed_connects: list[str] = []
        self.session: aiohttp.ClientSession | None = None  # --ws-deflate
        self.wire_bytes_start: int | None = None
        self.payload_bytes_start = 0

    def _state(self, tracked: bool) -> Tracker | _Counter:
        if tracked:
            return Tracker(self.index_of, self.shared.send_times, self.spec.capacity)
        return _Counter()

    async def connect(self) -> None:
        spec = self.spec
        plan = [(i < spec.tracked, False) for i in range(spec.normal)]
        plan += [(True, True)] * spec.slow
        access = spec.access
        context = access.context() if access is not None else None
        config = spec.config
        if config.ws_deflate:
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, force_close=True)
            )
        for start in range(0, len(plan), CONNECT_BATCH):
            batch = plan[start : start + CONNECT_BATCH]
            clients = await asyncio.gather(
                *(
                    self._connect(
                        subscription_path(
                            spec.ws_path,
                            config.worker_prefix,
                            config.subscriptions,
                            spec.first_index + start + i,
                        ),
                        tracked,
                        slow,
                        context,
                    )
                    for i, (tracked, slow) in enumerate(batch)
                )
            )
            await asyncio.wait_for(
                asyncio.gather(*(c.first_message for c in clients)), timeout=30.0
            )
            for client, (_tracked, slow) in zip(clients, batch, strict=True):
                (self.slow if slow else self.normal).append(client)

    async def _connect(self, path: str, tracked: bool, slow: bool, context: Any) -> Client:
        spec, access = self.spec, self.spec.access
        if self.session is not None:
            return await deflate_client.connect(
                self.session,
                spec.ws_host,
                spec.ws_port,
                path,
                _on_message,
                self._state(tracked),
                context,
                access.server_hostname if access is not None else None,
                access.headers if access is not None else None,
            )
        return await wsclient.connect(
            spec.ws_host,
            spec.ws_port,
            path,
            _on_message,
            self._state(tracked),
            SLOW_RECEIVE_BUFFER if slow else None,
            context,
            access.server_hostname if access is not None else None,
            access.headers if access is not None else None,
        )

    @property
    def clients(self) -> list[Client]:
        return self.normal + self.slow

    def start(self, start: float) -> None:
        for client in self.clients:
            client.tag.active = True
        self.wire_bytes_start = wire_bytes(self.normal)
        self.payload_bytes_start = sum(c.bytes for c in self.normal)
        config = self.spec.config
        loop = asyncio.get_running_loop()
        delay = start - time.monotonic()
        if self.slow and config.slow_for > 0:
            loop.call_later(delay + config.slow_after, self._pause_slow)
            loop.call_later(delay + config.slow_after + config.slow_for, self._resume_slow)
        loop.call_later(PING_INTERVAL, self._ping)

    def _pause_slow(self) -> None:
        for client in self.slow:
            client.pause()

    def _resume_slow(self) -> None:
        for client in self.slow:
            client.resume()

    def _ping(self) -> None:
        for client in self.clients:
            client.ping()
        asyncio.get_running_loop().call_later(PING_INTERVAL, self._ping)

    async def quiet(self, idle: float = QUIET_IDLE, timeout: float = QUIET_TIMEOUT) -> float:
        """Wait until no client has read anything for ``idle`` s (all caught up)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            latest = max((c.last_received for c in self.clients), default=0.0)
            if time.monotonic() - latest >= idle:
                break
            await asyncio.sleep(idle / 3)
        return time.monotonic() - started

    def result(self, cpu_seconds: float, quiet_wait: float, window: float) -> dict[str, Any]:
        """Figures of every client; ``window``: see ``config.batch_window``."""
        shared = self.shared
        accepted = shared.accepted_tags()
        last_accepted = list(shared.last_accepted)
        latency = Histogram()
        slow_latency = Histogram()
        missed = coalesced = stale = slow_stale = tracked = 0
        shortfall = entries = 0
        slow_messages = 0
        for client in self.normal:
            state = client.tag
            if isinstance(state, Tracker):
                tracked += 1
                latency.merge(state.latency)
                gaps = state.gaps(self.layout, accepted, shared.states, window)
                missed += gaps[0]
                coalesced += gaps[1]
                stale += state.stale(last_accepted)
                entries += state.fragments
            else:
                entries += state.entries
                shortfall += max(0, len(accepted) - state.entries)
        for client in self.slow:
            state = client.tag
            slow_latency.merge(state.latency)
            slow_stale += state.stale(last_accepted)
            slow_messages += client.messages
        return {
            "clients": len(self.normal),
            "tracked": tracked,
            "slow_clients": len(self.slow),
            "messages": sum(c.messages for c in self.normal),
            "bytes": sum(c.bytes for c in self.normal),
            # bytes on the wire to the clients that keep up, from the start to the quiet
            "wire_bytes": _since(wire_bytes(self.normal), self.wire_bytes_start),
            "payload_bytes": sum(c.bytes for c in self.normal) - self.payload_bytes_start,
            "deflate_clients": sum(1 for c in self.normal if getattr(c, "compress", 0)),
            "entries": entries,
            "latency": latency,
            "missed": missed,
            "coalesced": coalesced,
            "stale": stale,
            "untracked_shortfall": shortfall,
            "slow_latency": slow_latency,
            "slow_stale": slow_stale,
            "slow_messages": slow_messages,
            "dropped": sum(1 for c in self.clients if c.transport is None),
            "accepted_seen_by_process": len(accepted),
            "cpu_seconds": cpu_seconds,
            "quiet_wait": quiet_wait,
        }

    def close(self) -> None:
        for client in self.clients:
            client.close()


def _since(now: int | None, start: int | None) -> int | None:
    return None if now is None or start is None else now - start


async def _main(spec: ClientSpec, pipe: Connection) -> None:
    shared = SharedArrays(Path(spec.shared_path), spec.capacity, spec.config.workers)
    group = ClientGroup(spec, shared)
    try:
        await group.connect()
        pipe.send(("ready", {"clients": len(group.clients)}))
        message = await receive(pipe)
        if message[0] != "start":
            return
        _kind, start, end = message
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        group.start(start)
        cpu0 = time.process_time()
        await asyncio.sleep(max(0.0, end - time.monotonic()))
        cpu1 = time.process_time()
        message = await receive(pipe)  # ("stop", batch window in seconds)
        quiet_wait = await group.quiet()
        pipe.send(("result", group.result(cpu1 - cpu0, quiet_wait, message[1])))
    except Exception as exc:  # reported to the coordinator, which prints it
        pipe.send(("error", f"client process {spec.index}: {type(exc).__name__}: {exc}"))
    finally:
        group.close()
        await asyncio.sleep(0.05)
        if group.session is not None:
            await group.session.close()
        del group
        shared.close()


def clients_main(spec: ClientSpec, pipe: Connection) -> None:
    """Process entry point (multiprocessing, spawn)."""
    run_async(_main(spec, pipe))
