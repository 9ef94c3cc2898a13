"""The master's process tuning, applied for as long as the master runs, in one place.

Two interpreter-wide settings, both measured in docs/PERFORMANCE.md:

- the GIL switch interval: a short one (0.5 ms instead of CPython's 5 ms) bounds how long
  the event loop waits for the GIL when a thread (the store's writer) holds it;
- the garbage collector, run by a ``GcPacer`` from the event loop in small steps instead
  of CPython's own schedule (see master/gc_pacer.py).

``tuned_process`` applies them and puts the interpreter back as it found it on the way
out, also when what runs inside fails or is cancelled, so a master started and stopped
inside a longer-lived process (the tests, ``cloudai up``) leaves no trace.
"""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import AsyncIterator

from cloudai.master.gc_pacer import Collector, GcPacer


@contextlib.asynccontextmanager
async def tuned_process(
    *,
    gil_switch_interval: float,
    gc_young_interval: float,
    gc_full_interval: float,
    gc_refresh_interval: float,
    collector: Collector = gc,
) -> AsyncIterator[GcPacer | None]:
    """Apply the master's process tuning for the body of the ``async with``.

    ``gil_switch_interval`` (seconds) replaces ``sys.getswitchinterval()``; 0 or less
    leaves it alone. ``gc_young_interval`` > 0 starts a ``GcPacer`` on the running loop
    (with the full and refresh intervals) and yields it; 0 or less leaves the collector to
    CPython and yields None. On exit, normal or not, the pacer is stopped (the collector's
    enabled state restored, what it froze unfrozen) and the switch interval restored.
    Invalid GC intervals raise ``ValueError`` on entry, with nothing left changed.
    """
    previous_switch_interval = sys.getswitchinterval()
    try:
        if gil_switch_interval > 0:
            sys.setswitchinterval(gil_switch_interval)
        pacer: GcPacer | None = None
        if gc_young_interval > 0:
            pacer = GcPacer(
                gc_young_interval, gc_full_interval, gc_refresh_interval, collector=collector
            )
            pacer.start()
        try:
            yield pacer
        finally:
            if pacer is not None:
                await pacer.stop()
    finally:
        sys.setswitchinterval(previous_switch_interval)
