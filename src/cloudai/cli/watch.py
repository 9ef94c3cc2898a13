"""`cloudai watch`: print the master's telemetry stream; reconnect with back-off."""

from __future__ import annotations

import argparse
import asyncio
import logging
import ssl
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import orjson

from cloudai import views
from cloudai.backoff import Backoff
from cloudai.cli.api_client import ApiError, auth_headers, base_url, client_ssl_context
from cloudai.settings import ClientSettings, SettingsError

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "watch",
        help="print each worker's live telemetry, one line per update",
        description="Print the master's live telemetry stream, one line per worker update; "
        "reconnects by itself.",
    )
    p.add_argument(
        "--url",
        help="the master's HTTP or WebSocket address (env CLOUDAI_URL; "
        "default wss://127.0.0.1:8080)",
    )
    add_stream_credentials(p)
    p.add_argument("--worker", metavar="WORKER_ID", help="only this worker")
    p.add_argument("--json", action="store_true", help="print the raw JSON messages")
    p.add_argument("--count", type=int, default=0, help="exit after N messages (0: never)")
    p.set_defaults(func=run)


def add_stream_credentials(parser: argparse.ArgumentParser) -> None:
    """--token and --ca, as the other client commands have them."""
    parser.add_argument(
        "--token",
        help="API token, scope read or admin (env CLOUDAI_ADMIN_TOKEN; default: the "
        "master's admin.token on this machine)",
    )
    parser.add_argument(
        "--ca",
        type=Path,
        metavar="FILE",
        help="CA certificate the master's certificate is checked against (env "
        "CLOUDAI_CA_FILE; default: the master's tls/ca.pem on this machine)",
    )


def stream_settings(
    args: argparse.Namespace,
) -> tuple[ClientSettings, ssl.SSLContext | bool, dict[str, str]]:
    """The settings (flags over env over config file), the TLS settings of an https
    master (``True``: aiohttp's default, for plain HTTP) and the token's header."""
    settings: ClientSettings = ClientSettings.load(
        url=args.url, admin_token=getattr(args, "token", None), ca_file=getattr(args, "ca", None)
    )
    tls: ssl.SSLContext | bool = True
    if base_url(settings.url).startswith("https://"):
        tls = client_ssl_context(settings.ca_file)
    return settings, tls, auth_headers(settings.admin_token)


def stream_url(base: str, worker: str | None) -> str:
    base = base.rstrip("/")
    if base.startswith("http"):
        base = "ws" + base[4:]
    if "/ws/telemetry" not in base:
        base += "/ws/telemetry"
    return f"{base}/{worker}" if worker else base


def format_worker(state: dict[str, Any], now: float | None = None) -> str:
    """One line: id, state, usage percentages (``-`` when not known), tasks, last seen."""
    tasks = state.get("running_tasks") or []
    flag = "active" if state.get("is_active") else "INACTIVE"
    last = views.finite(state.get("last_update"))
    seen = (
        "never seen"
        if last is None
        else f"seen {views.ago(last, time.time() if now is None else now)}"
    )

    def usage(name: str) -> str:
        value = views.usage(state, name)
        return f"{views.format_percent(value):>6}"

    return (
        f"{state.get('worker_id', '?'):<24} {flag:<8} cpu {usage('cpu_usage')}  "
        f"mem {usage('memory_usage')}  gpu {usage('gpu_usage')}  "
        f"tasks {len(tasks):<3} {seen}"
    )


async def watch(
    url: str,
    raw: bool = False,
    count: int = 0,
    out: TextIO = sys.stdout,
    tls: ssl.SSLContext | bool = True,
    headers: Mapping[str, str] | None = None,
) -> int:
    """Print the stream at ``url`` (``tls``: aiohttp's ``ssl``; ``headers``: the token's)."""
    backoff = Backoff(initial=0.5, maximum=10.0)
    received = 0
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.ws_connect(url, heartbeat=30, ssl=tls, headers=headers) as ws:
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
                                if isinstance(state, dict):
                                    print(format_worker(state), file=out, flush=True)
                        if count and received >= count:
                            return 0
                reason = f"closed ({ws.close_code})"
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status in (401, 403):  # retrying will not help
                    print(f"error: refused: HTTP {exc.status} {exc.message}", file=sys.stderr)
                    return 1
                reason = f"refused: HTTP {exc.status} {exc.message}"
            except (aiohttp.ClientError, OSError) as exc:
                reason = str(exc) or type(exc).__name__
            delay = backoff.next_delay()
            print(f"# disconnected: {reason}; retrying in {delay:.1f} s", file=out, flush=True)
            await asyncio.sleep(delay)


def run(args: argparse.Namespace) -> int:
    try:
        settings, tls, headers = stream_settings(args)
    except (SettingsError, ApiError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        url = stream_url(base_url(settings.url), args.worker)
        return asyncio.run(watch(url, args.json, args.count, tls=tls, headers=headers))
    except KeyboardInterrupt:
        return 0
