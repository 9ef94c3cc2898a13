"""`cloudai history`: a worker's (or the cluster's) telemetry history through the admin
API (docs/HISTORY.md).

    cloudai history WORKER [--since 1h] [--metrics cpu_usage,memory_usage] [--points N]
    cloudai history --cluster [...]
    ... --json               the API's JSON
    ... --plot FILE.png      a chart (matplotlib: pip install 'cloudai[plot]')

The table has one row per metric: a sparkline of its averages, then the least minimum,
the average, the greatest maximum and the last value over the range.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from cloudai.cli.admin import (
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    _out,
    client_from_args,
    connection_options,
    print_error,
)
from cloudai.cli.api_client import ApiError
from cloudai.settings import SettingsError

SUMMARY = "a worker's telemetry history: sparklines, min/avg/max, JSON, PNG"
BARS = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 60
DEFAULT_CLI_POINTS = SPARK_WIDTH
PLOT_HINT = "--plot needs matplotlib: pip install 'cloudai[plot]'"
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 7 * 86_400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")


def parse_since(text: str) -> float:
    """``90s``, ``15m``, ``1h``, ``7d``, ``2w`` or plain seconds -> seconds."""
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"a duration such as 15m, 1h or 7d, got {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def sparkline(values: Sequence[float | None], width: int = SPARK_WIDTH) -> str:
    """One bar per value (a space where there is none), values grouped (averaged) to fit
    ``width``; bars scaled between the least and the greatest value."""
    if len(values) > width:
        size = len(values) / width
        grouped: list[float | None] = []
        for i in range(width):
            chunk = [v for v in values[int(i * size) : int((i + 1) * size)] if v is not None]
            grouped.append(sum(chunk) / len(chunk) if chunk else None)
        values = grouped
    present = [v for v in values if v is not None]
    if not present:
        return " " * len(values)
    low, high = min(present), max(present)
    span = high - low
    out = []
    for v in values:
        if v is None:
            out.append(" ")
        elif span <= 0:
            out.append(BARS[0] if high == 0 else BARS[len(BARS) // 2])
        else:
            out.append(BARS[min(len(BARS) - 1, int((v - low) / span * len(BARS)))])
    return "".join(out)


def summary(series: dict[str, list[float | None]]) -> tuple[float | None, ...]:
    """(least minimum, average of the averages, greatest maximum, last average)."""
    avgs = [v for v in series["avg"] if v is not None]
    lows = [v for v in series["min"] if v is not None]
    highs = [v for v in series["max"] if v is not None]
    return (
        min(lows) if lows else None,
        sum(avgs) / len(avgs) if avgs else None,
        max(highs) if highs else None,
        avgs[-1] if avgs else None,
    )


def format_value(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    if metric.endswith("_usage"):
        return f"{value:.1f}%"
    if metric.endswith("_bytes_per_sec"):
        return f"{_bytes(value)}/s"
    if metric.endswith("_bytes"):
        return _bytes(value)
    if metric == "running_tasks":
        return f"{value:.1f}".removesuffix(".0")
    return f"{value:.2f}"


def _bytes(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover


def render(body: dict[str, Any]) -> Group:
    who = body.get("worker_id") or "cluster"
    start = datetime.fromtimestamp(body["from"], UTC).strftime("%Y-%m-%d %H:%M:%S")
    end = datetime.fromtimestamp(body["to"], UTC).strftime("%H:%M:%S UTC")
    title = f"{who}: {start} - {end}, tier {body['tier']}, a point every {body['resolution']:g} s"
    table = Table(box=None, pad_edge=False)
    for column in ("metric", "history", "min", "avg", "max", "last"):
        table.add_column(column, justify="right" if column not in ("metric", "history") else "left")
    for metric, series in body["series"].items():
        figures = summary(series)
        if all(v is None for v in figures):
            continue  # a figure this worker does not send
        table.add_row(metric, sparkline(series["avg"]), *(format_value(metric, v) for v in figures))
    return Group(Text(title), table)


def plot(body: dict[str, Any], path: Path) -> None:
    """One chart per metric with data: the average as a line, min..max shaded. Raises
    ImportError without matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [
        (name, s) for name, s in body["series"].items() if any(v is not None for v in s["avg"])
    ]
    count = max(1, len(metrics))
    fig, axes = plt.subplots(
        count, 1, figsize=(10, 2.2 * count), sharex=True, squeeze=False, layout="constrained"
    )
    times = [datetime.fromtimestamp(t, UTC) for t in body["t"]]
    nan = math.nan
    for ax, (name, s) in zip((row[0] for row in axes), metrics, strict=False):
        avg = [nan if v is None else v for v in s["avg"]]
        low = [nan if v is None else v for v in s["min"]]
        high = [nan if v is None else v for v in s["max"]]
        ax.fill_between(times, low, high, alpha=0.25, linewidth=0)
        ax.plot(times, avg, linewidth=1.2, marker=".", markersize=3)
        ax.set_ylabel(name, fontsize=8)
        ax.grid(True, alpha=0.3)
    who = body.get("worker_id") or "cluster"
    fig.suptitle(f"{who}: tier {body['tier']}, a point every {body['resolution']:g} s (UTC)")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "history",
        help=SUMMARY,
        description="A worker's telemetry history from the master: per metric a "
        "sparkline, the minimum, average, maximum and last value over the range.",
        parents=[connection_options()],
    )
    p.add_argument("worker", nargs="?", metavar="WORKER", help="the worker's id")
    p.add_argument("--cluster", action="store_true", help="every worker together")
    p.add_argument(
        "--since", type=parse_since, default=3600.0, help="how far back: 15m, 1h, 7d (default 1h)"
    )
    p.add_argument("--metrics", help="comma-separated, e.g. cpu_usage,memory_usage (default all)")
    p.add_argument(
        "--points",
        type=int,
        default=None,
        help=f"points asked for (default {DEFAULT_CLI_POINTS}; 300 with --json)",
    )
    output = p.add_argument_group("output").add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the API's JSON")
    output.add_argument("--plot", type=Path, metavar="FILE.png", help="draw a PNG chart")
    p.set_defaults(func=run, plain=False)


def run(args: argparse.Namespace) -> int:
    if (args.worker is None) == (not args.cluster):
        print_error("give a WORKER id or --cluster (not both)")
        return EXIT_USAGE
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print_error(PLOT_HINT)
            return EXIT_USAGE
    points = args.points
    if points is None:
        points = DEFAULT_CLI_POINTS if not (args.json or args.plot) else 300
    end = time.time()
    try:
        body = client_from_args(args).history(
            args.worker, args.metrics, end - args.since, end, points
        )
    except SettingsError as exc:
        print_error(str(exc))
        return EXIT_USAGE
    except ApiError as exc:
        print_error(exc.message)
        return EXIT_UNREACHABLE if exc.unreachable else EXIT_REFUSED
    if args.json:
        import orjson

        sys.stdout.write(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    if args.plot is not None:
        plot(body, args.plot)
        print(f"wrote {args.plot}")
        return 0
    _out().print(render(body))
    return 0
