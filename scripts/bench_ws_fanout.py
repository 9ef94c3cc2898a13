"""The hub's own fan-out cost, in one process, without sockets.

``.venv/bin/python scripts/bench_ws_fanout.py [--clients 1000] [--workers 1000]
[--per-tick 25] [--ticks 400]`` connects CLIENTS fake clients to a real
``TelemetryHub`` (their transports count bytes and drop them), runs TICKS ticks of
PER-TICK changed workers each, and prints one JSON line per scenario: the hub's CPU per
tick and per client delivery, frames encoded and compressions per tick, bytes written
per client. Scenarios: no subscription, all clients on one subscription, spread over 10,
and the same three with permessage-deflate.

What it leaves out is the same for every scenario: the kernel's socket writes (on
loopback about 15-25 us per frame on the project's VM, more than the hub's own work) and
the heartbeats' ingest. So it answers "what do subscriptions and compression add to the
master's Python", reproducibly on a busy machine; ``cloudai bench --subscriptions N
[--ws-deflate]`` measures the whole path.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from typing import Any

import orjson

from cloudai.master.subscriptions import DEFAULT, Subscription, parse_query
from cloudai.master.ws_hub import DELIVERY_CHUNK, TelemetryHub
from cloudai.telemetry.manager import TelemetryEvent
from cloudai.telemetry.model import TaskTelemetry, WorkerTelemetry


class _CountingTransport:
    def __init__(self) -> None:
        self.bytes = 0

    def write(self, data: bytes) -> None:
        self.bytes += len(data)

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0


class _FakeWebSocket:
    def __init__(self, compress: int) -> None:
        self.compress = compress
        self.closed = False
        self.transport = _CountingTransport()

    async def send_frame(self, message: bytes, opcode: Any) -> None:
        self.transport.bytes += len(message)

    async def drain(self) -> None:
        return None


def _state(i: int, tick: int) -> WorkerTelemetry:
    cpu = ((tick * 7919 + i * 104729) % 1_000_000) / 10_000.0
    return WorkerTelemetry(
        f"bench-{i:05d}",
        cpu,
        41.3 + (i % 7),
        31.0,
        0.0,
        [TaskTelemetry(f"task-{i}-{tick % 3}", 1.0, 0.5, 0.0, "running", cpu, 10_485_760 + i)],
        1_764_300_000.0 + tick,
        True,
        "active",
    )


def _subscription(subscriptions: int, index: int) -> Subscription:
    if subscriptions == 0:
        return DEFAULT
    k = index % subscriptions
    workers = "bench-*" if subscriptions == 1 else f"bench-*,unused-{k}"
    return parse_query({"workers": workers})


async def scenario(
    clients: int, workers: int, per_tick: int, ticks: int, subscriptions: int, deflate: bool
) -> dict[str, Any]:
    hub = TelemetryHub(batch_interval=0.0)
    for i in range(workers):
        hub.on_telemetry(_state(i, 0), TelemetryEvent.UPDATE)
    sockets = [_FakeWebSocket(15 if deflate else 0) for _ in range(clients)]
    joined = [
        hub.connect(
            ws,  # type: ignore[arg-type]
            None,
            "bench",
            transport=ws.transport,  # type: ignore[arg-type]
            subscription=_subscription(subscriptions, i),
            drain=ws.drain,
        )
        for i, ws in enumerate(sockets)
    ]
    for _ in range(5):
        await asyncio.sleep(0)  # snapshots sent
    before = [ws.transport.bytes for ws in sockets]
    rounds = clients // DELIVERY_CHUNK + 2
    stats = hub.stats
    frames0, groups0, zips0 = stats.frames_built, stats.group_frames, stats.compressed_frames
    gc.collect()
    cpu0 = time.process_time()
    for tick in range(1, ticks + 1):
        start = (tick * per_tick) % workers
        for i in range(start, start + per_tick):
            hub.on_telemetry(_state(i % workers, tick), TelemetryEvent.UPDATE)
        hub.flush()
        for _ in range(rounds):  # chunked delivery: let every chunk run
            await asyncio.sleep(0)
    cpu = time.process_time() - cpu0
    sent = sum(ws.transport.bytes - b for ws, b in zip(sockets, before, strict=True))
    for client in joined:
        await hub.disconnect(client)
    return {
        "clients": clients,
        "workers_per_tick": per_tick,
        "ticks": ticks,
        "subscriptions": subscriptions,
        "deflate": deflate,
        "hub_cpu_us_per_tick": round(cpu / ticks * 1e6, 1),
        "hub_cpu_us_per_delivery": round(cpu / ticks / clients * 1e6, 2),
        "frames_encoded_per_tick": round(
            (stats.group_frames - groups0 or stats.frames_built - frames0) / ticks, 2
        ),
        "compressions_per_tick": round((stats.compressed_frames - zips0) / ticks, 2),
        "bytes_per_client_per_tick": round(sent / clients / ticks),
        "direct_sends": stats.direct_sends,
    }


async def main_async(args: argparse.Namespace) -> None:
    for deflate in (False, True):
        for subscriptions in (0, 1, 10):
            result = await scenario(
                args.clients, args.workers, args.per_tick, args.ticks, subscriptions, deflate
            )
            print(orjson.dumps(result).decode(), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=1000)
    parser.add_argument("--per-tick", type=int, default=25, help="changed workers per tick")
    parser.add_argument("--ticks", type=int, default=400)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
