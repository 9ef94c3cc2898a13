"""`cloudai watch`: print the master's telemetry stream; reconnect with back-off."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from typing import Any, TextIO

import aiohttp
import orjson

from cloudai.backoff import Backoff

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("watch", help="print live telemetry from a master")
    p.add_argument("--url", default="ws://127.0.0.1:8080", help="master HTTP/WebSocket base URL")
    p.add_argument("--worker", help="only this worker")
    p.add_argument("--json", action="store_true", help="print raw JSON messages")
    p.add_argument("--count", type=int, default=0, help="exit after N messages (0: never)")
    p.set_defaults(func=run)


def stream_url(base: str, worker: str | None) -> str:
    base = base.rstrip("/")
    if base.startswith("http"):
        base = "ws" + base[4:]
    if "/ws/telemetry" not in base:
        base += "/ws/telemetry"
    return f"{base}/{worker}" if worker else base


def format_worker(state: dict[str, Any]) -> str:
    tasks = state.get("running_tasks") or []
    flag = "active" if state.get("is_active") else "INACTIVE"
    age = max(0, int(time.time()) - int(state.get("last_update", 0)))
    return (
        f"{state.get('worker_id', '?'):<24} {flag:<8} cpu {state.get('cpu_usage', 0):5.1f}%  "
        f"mem {state.get('memory_usage', 0):5.1f}%  gpu {state.get('gpu_usage', 0):5.1f}%  "
        f"tasks {len(tasks):<3} seen {age}s ago"
    )


async def watch(url: str, raw: bool = False, count: int = 0, out: TextIO = sys.stdout) -> int:
    backoff = Backoff(initial=0.5, maximum=10.0)
    received = 0
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.ws_connect(url, heartbeat=30) as ws:
                    backoff.reset()
                    print(f"# connected to {url}", file=out, flush=True)
                    async for msg in ws:
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            break
                        received += 1
                        if raw:
                            print(msg.data, file=out, flush=True)
                        else:
                            message = orjson.loads(msg.data)
                            if not message:
                                print("# no workers yet", file=out, flush=True)
                            for state in message.values():
                                print(format_worker(state), file=out, flush=True)
                        if count and received >= count:
                            return 0
                reason = f"closed ({ws.close_code})"
            except (aiohttp.ClientError, OSError) as exc:
                reason = str(exc) or type(exc).__name__
            delay = backoff.next_delay()
            print(f"# disconnected: {reason}; retrying in {delay:.1f} s", file=out, flush=True)
            await asyncio.sleep(delay)


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(watch(stream_url(args.url, args.worker), args.json, args.count))
    except KeyboardInterrupt:
        return 0
