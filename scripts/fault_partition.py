#!/usr/bin/env python3
"""Network partitions at full length: does a worker cut off for less than the inactivity
timeout stay active, and does one cut off for longer go inactive, then come back?

Needs root (``ip netns``). Starts a real master (plaintext, its default 30 s inactivity
timeout unless --timeout) in the root network namespace and one real worker (heartbeat
every --interval s, the default 5 s; its default retry back-off) in a namespace of its
own, joined by a veth pair on a /30 of 10.254.0.0/16 (the same set-up as
tests/integration/test_partition.py, which runs this scaled to a 6 s timeout). Then,
for each of --cuts seconds: the root end of the pair is set down that long, then up,
and a WebSocket client on ``/ws/telemetry`` times the worker's states.

Prints a table: when the worker went inactive (seconds after the cut), when it was
heard again after the heal, and false transitions (inactive during a cut shorter than
the timeout, inactive twice, or inactive again after it came back). ``--json``: the
rows as JSON too. About 2-3 minutes with the defaults (cuts of 20 s and 60 s).

    python scripts/fault_partition.py
    python scripts/fault_partition.py --timeout 10 --interval 2 --cuts 5 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.harness import Process, async_wait_until, start_master  # noqa: E402
from tests.integration.test_partition import WORKER_ID, Timeline, Veth, timeline  # noqa: E402


@dataclass
class Row:
    cut_s: float
    expected: str  # "active" (cut < timeout) or "inactive"
    inactive_after_s: float | None  # seconds after the cut; None: it stayed active
    heard_again_s: float | None  # after the heal: the first heartbeat (it is active)
    false_transitions: int
    note: str = ""


async def one_cut(line: Timeline, veth: Veth, cut_s: float, timeout: float, interval: float) -> Row:
    # Start from a steady state: active, two heartbeats in a row.
    since = time.monotonic()
    await async_wait_until(
        lambda: sum(t > since and s == "active" for t, s in line.seen) >= 2,
        timeout + 4 * interval,
        "two heartbeats before the cut",
    )
    cut = time.monotonic()
    veth.cut()
    try:
        await asyncio.sleep(cut_s)  # the fault: the link is down this long
    finally:
        veth.heal()
    healed = time.monotonic()
    expected = "active" if cut_s < timeout else "inactive"
    note = ""
    try:
        # Heartbeats resume by themselves: the worker's back-off is capped at 15 s, the
        # master's own TCP retransmissions, gRPC keepalive (30 s + 10 s) are the rest.
        await async_wait_until(lambda: line.heard_after(healed), 120, "a heartbeat after heal")
        heard: float | None = next(t for t, s in line.seen if t > healed and s == "active")
        # ...and they keep coming: watch a while longer for a relapse.
        await asyncio.sleep(min(timeout, 3 * interval))
    except AssertionError as exc:
        heard, note = None, str(exc)
    inactive = line.inactive_since(cut)
    # Count transitions (a run of "inactive" messages is one), not messages.
    transitions = 0
    previous = None
    for t, state in line.seen:
        if t >= cut and state == "inactive" and previous != "inactive":
            transitions += 1
        previous = state
    false = transitions if expected == "active" else max(transitions - 1, 0)
    if expected == "inactive" and not inactive:
        note = note or "never went inactive"
    return Row(
        cut_s=cut_s,
        expected=expected,
        inactive_after_s=round(inactive[0] - cut, 1) if inactive else None,
        heard_again_s=round(heard - healed, 1) if heard is not None else None,
        false_transitions=false,
        note=note,
    )


async def scenario(args: argparse.Namespace, workdir: Path, veth: Veth) -> list[Row]:
    master = start_master(
        workdir,
        "--inactivity-timeout",
        str(args.timeout),
        "--host",
        veth.host_ip,
        "--allow-worker",
        WORKER_ID,
    )
    veth.processes.insert(0, master)
    http_port, grpc_port = master.ready["http_port"], master.ready["grpc_port"]
    master.extra["ws"] = f"ws://{veth.host_ip}:{http_port}"
    worker: Process = veth.start_worker(
        workdir, f"{veth.host_ip}:{grpc_port}", "--interval", str(args.interval)
    )
    rows = []
    async with timeline(master) as line:
        await line.until("active", 30)
        for cut_s in args.cuts:
            row = await one_cut(line, veth, cut_s, args.timeout, args.interval)
            print(f"  cut {cut_s:g} s: {row}", flush=True)
            rows.append(row)
    master.close()
    worker.close()
    return rows


def table(rows: list[Row], timeout: float, interval: float) -> str:
    lines = [
        f"timeout {timeout:g} s, heartbeat every {interval:g} s",
        "",
        "| cut | expected | inactive after the cut | heard again after heal | false transitions |",
        "|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        went = f"{r.inactive_after_s:.1f} s" if r.inactive_after_s is not None else "never"
        heard = f"{r.heard_again_s:.1f} s" if r.heard_again_s is not None else r.note
        lines.append(f"| {r.cut_s:g} s | {r.expected} | {went} | {heard} | {r.false_transitions} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeout", type=float, default=30.0, help="inactivity timeout, s")
    parser.add_argument("--interval", type=float, default=5.0, help="heartbeat interval, s")
    parser.add_argument(
        "--cuts", type=float, nargs="+", default=[20.0, 60.0], help="partition lengths, s"
    )
    parser.add_argument("--json", action="store_true", help="also print the rows as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="cloudai-partition-"))
    try:
        veth = Veth.create()
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"cannot create a network namespace (root needed): {exc}", file=sys.stderr)
        return 2
    began = time.monotonic()
    try:
        rows = asyncio.run(scenario(args, workdir, veth))
    finally:
        veth.close()
        if args.keep:
            print(f"logs in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(table(rows, args.timeout, args.interval))
    print(f"({time.monotonic() - began:.0f} s in all)")
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
