"""``run_master``: the one way a master process runs, shared by ``cloudai master`` and
``cloudai up``.

It owns the process: an event loop on uvloop (``asyncio.Runner``), the process tuning
measured in docs/PERFORMANCE.md (GIL switch interval, GC pacer; restored on the way out),
SIGINT/SIGTERM, the ready file, the console in the foreground when asked for, and the
shutdown sequence. Callers add their own steps around the master with ``on_started``
(after it listens) and ``before_stop`` (before it stops accepting).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from cloudai.alerts.rules import RuleError
from cloudai.loop import event_loop_factory
from cloudai.master.server import MasterServer, assemble
from cloudai.master.settings import MasterSettings
from cloudai.master.tuning import tuned_process
from cloudai.security.pki import PkiError
from cloudai.store import StoreError

log = logging.getLogger(__name__)

Hook = Callable[[MasterServer], Awaitable[None]]


def run_master(
    settings: MasterSettings,
    *,
    ready_file: Path | None = None,
    on_started: Hook | None = None,
    before_stop: Hook | None = None,
) -> int:
    """Run a master until SIGINT/SIGTERM or the console's ``exit``; the exit status."""
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        try:
            runner.run(serve(settings, ready_file, on_started, before_stop))
        except (OSError, PkiError, StoreError, RuleError) as exc:
            log.error("cannot start the master: %s", exc)
            return 1
    return 0


async def serve(
    settings: MasterSettings,
    ready_file: Path | None = None,
    on_started: Hook | None = None,
    before_stop: Hook | None = None,
) -> None:
    server = await assemble(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    alerts = server.parts.alerts
    if alerts is not None:  # SIGHUP: read the alert rules file again
        loop.add_signal_handler(signal.SIGHUP, alerts.request_reload)
    try:
        await server.start()
        async with tuned_process(
            gil_switch_interval=settings.gil_switch_interval,
            gc_young_interval=settings.gc_young_interval,
            gc_full_interval=settings.gc_full_interval,
            gc_refresh_interval=settings.gc_refresh_interval,
        ):
            if on_started is not None:
                await on_started(server)
            if ready_file is not None:
                server.write_ready_file(ready_file)
            waiters: list[asyncio.Future[object]] = [asyncio.ensure_future(stop.wait())]
            interactive = settings.interactive
            if interactive is None:
                interactive = sys.stdin.isatty()
            if interactive:
                waiters.append(asyncio.ensure_future(_console(server)))
            _done, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if before_stop is not None:
                await before_stop(server)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await server.stop()
        log.info("stopped")


async def _console(server: MasterServer) -> None:
    from cloudai.master.alerts_admin import AlertsAdmin
    from cloudai.master.console import console_banner, make_console

    banner = console_banner(server.grpc_port, server.http_port)
    history = server.settings.data_dir / "console_history"
    alerts = server.parts.alerts
    alerts_admin = None if alerts is None else AlertsAdmin(alerts)
    await make_console(server.parts.admin, history, banner, alerts=alerts_admin)()
