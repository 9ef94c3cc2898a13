"""Latency vs offered load, one line per mode (and client count), as a PNG (matplotlib)."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any


def _label(record: dict[str, Any]) -> str:
    clients = record["clients"]
    mode = record["mode"]
    if str(record.get("target", "")).startswith("floor"):
        mode = f"{mode} (do-nothing gRPC server)"
    if not clients:
        return mode
    return f"{mode}, {clients} client{'s' if clients != 1 else ''}"


def _series(
    records: list[dict[str, Any]], path: tuple[str, ...]
) -> dict[str, list[tuple[float, float, float]]]:
    """label -> [(offered rate, median value, median failed share)] of the runs per rate."""
    grouped: dict[str, dict[float, list[tuple[float, float]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for record in records:
        value: Any = record
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is None:
            continue
        failed = record.get("lost", 0) / max(1, record.get("sent", 1))
        grouped[_label(record)][record["offered_rate"]].append((float(value), failed))
    return {
        label: sorted(
            (
                rate,
                statistics.median(v for v, _f in values),
                statistics.median(f for _v, f in values),
            )
            for rate, values in by_rate.items()
        )
        for label, by_rate in grouped.items()
    }


def plot_sweep(records: list[dict[str, Any]], path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: list[tuple[str, list[tuple[str, tuple[str, ...]]]]] = [
        ("gRPC latency (ms)", [("p50", ("rpc_ms", "p50")), ("p99", ("rpc_ms", "p99"))]),
        (
            "heartbeat -> WebSocket client (ms)",
            [("p50", ("ws", "hb_to_client_ms", "p50")), ("p99", ("ws", "hb_to_client_ms", "p99"))],
        ),
        ("master CPU (% of one core)", [("", ("master", "cpu_pct"))]),
    ]
    used = [
        (name, lines)
        for name, lines in panels
        if any(_series(records, key) for _label, key in lines)
    ]
    fig, axes = plt.subplots(1, len(used), figsize=(5.5 * len(used), 4.2), squeeze=False)
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colors: dict[str, str] = {}  # one color per series label, p50 dashed, p99 solid
    for ax, (name, lines) in zip(axes[0], used, strict=True):
        for suffix, key in lines:
            for label, points in _series(records, key).items():
                xs, ys, failed = zip(*points, strict=True)
                style = "--" if suffix == "p50" else "-"
                color = colors.setdefault(label, palette[len(colors) % len(palette)])
                ax.plot(xs, ys, style, marker="o", color=color, label=f"{label} {suffix}".strip())
                for x, y, share in zip(xs, ys, failed, strict=True):
                    if share > 0.01 and suffix != "p50":  # overload: calls shed or failed
                        ax.annotate(f"{share:.0%} failed", (x, y), fontsize=7, color="red")
        ax.set_xlabel("offered heartbeats/s")
        ax.set_title(name)
        if "latency" in name or "client" in name:
            ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
