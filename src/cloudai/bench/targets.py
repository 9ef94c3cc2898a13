"""Issue 5's targets, judged from recorded runs (the JSON lines of ``--json-out``).

Pure: ``judge(records)`` picks the runs each target is about, takes medians over
repeated runs and returns one ``Verdict`` per target it has runs for; ``plot_targets``
draws them. ``cloudai bench --replot FILES --targets PNG`` prints and draws them, so
docs/PERFORMANCE.md's summary is reproducible from docs/perf/*.jsonl.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Record = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Verdict:
    target: str  # what the issue asks, in words
    measured: float
    limit: float
    unit: str
    higher_is_better: bool
    runs: int  # how many runs the figure is the median of
    note: str = ""

    @property
    def met(self) -> bool:
        if self.higher_is_better:
            return self.measured >= self.limit
        return self.measured <= self.limit

    @property
    def ratio(self) -> float:
        """How far from the limit: <= 1 is met, 2 is "twice too slow/big"."""
        if self.higher_is_better:
            return self.limit / self.measured if self.measured > 0 else float("inf")
        return self.measured / self.limit if self.limit > 0 else float("inf")


def _get(record: Record, *path: str) -> Any:
    value: Any = record
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _ours(record: Record) -> bool:
    return str(record.get("target", "own master")) == "own master"


def _load_runs(records: Iterable[Record], **fields: Any) -> list[Record]:
    return [
        r
        for r in records
        if "mode" in r and _ours(r) and all(r.get(k) == v for k, v in fields.items())
    ]


def _median(runs: list[Record], *path: str) -> float | None:
    values = [float(v) for r in runs if (v := _get(r, *path)) is not None]
    return statistics.median(values) if values else None


def _clean(record: Record) -> bool:
    """Every heartbeat sent was accepted, on time, and no client missed one."""
    return (
        record.get("lost", 1) == 0
        and record.get("errors", 1) == 0
        and record.get("achieved_rate", 0) >= 0.99 * record["offered_rate"]
        and (_get(record, "ws", "missed") or 0) == 0
    )


def _keeps_up(record: Record) -> bool:
    """A stream run the master kept up with: clean, and heartbeats not queueing up
    (median heartbeat-to-client latency under 50 ms; past the knee it grows to seconds)."""
    p50 = _get(record, "ws", "hb_to_client_ms", "p50")
    return _clean(record) and p50 is not None and p50 <= 50.0


def _best_rate(runs: list[Record], ok: Callable[[Record], bool]) -> tuple[float, int]:
    """The highest offered rate whose runs (median of them) all pass ``ok``."""
    by_rate: dict[float, list[Record]] = {}
    for r in runs:
        by_rate.setdefault(r["offered_rate"], []).append(r)
    best, count = 0.0, 0
    for rate, group in sorted(by_rate.items()):
        passed = sum(1 for r in group if ok(r))
        if passed * 2 > len(group):  # most runs at this rate pass
            best, count = rate, len(group)
    return best, count


def judge(records: list[Record]) -> list[Verdict]:
    verdicts: list[Verdict] = []
    add = verdicts.append

    unary = _load_runs(records, mode="unary", clients=0, slow_clients=0)
    if unary:
        rate, n = _best_rate(
            unary, lambda r: _clean(r) and (_get(r, "rpc_ms", "p99") or 1e9) <= 5.0
        )
        add(Verdict("unary ingest at RPC p99 <= 5 ms", rate, 5000, "heartbeats/s", True, n))

    stream = [r for r in _load_runs(records, mode="stream", slow_clients=0) if r["clients"] <= 1]
    if stream:
        rate, n = _best_rate(stream, _keeps_up)
        add(
            Verdict("streaming ingest, nothing lost, kept up", rate, 20000, "heartbeats/s", True, n)
        )

    for clients, limit in ((100, 11.0), (1000, 50.0)):
        runs = [
            r
            for r in _load_runs(
                records, mode="stream", clients=clients, slow_clients=0, offered_rate=1000.0
            )
            if r.get("workers") == 1000 and r.get("duration_s", 0) < 60
        ]
        if not runs:
            continue
        p99 = _median(runs, "ws", "hb_to_client_ms", "p99")
        missed = sum(int(_get(r, "ws", "missed") or 0) for r in runs)
        note = f"missed {missed}"
        add(
            Verdict(
                f"fan-out 1,000/s to {clients:,} clients: p99",
                p99 or 0,
                limit,
                "ms",
                False,
                len(runs),
                note,
            )
        )
        if clients == 100:
            cpu = _median(runs, "master", "cpu_pct") or 0
            add(
                Verdict(
                    "fan-out to 100 clients: master CPU", cpu, 100, "% of a core", False, len(runs)
                )
            )

    scale = [r for r in _load_runs(records, mode="stream", workers=10000) if r["clients"] <= 10]
    if scale:
        add(
            Verdict(
                "10,000 workers: master CPU",
                _median(scale, "master", "cpu_pct") or 0,
                50,
                "% of a core",
                False,
                len(scale),
            )
        )
        add(
            Verdict(
                "10,000 workers: master RSS",
                _median(scale, "master", "rss_mb", "max") or 0,
                150,
                "MB",
                False,
                len(scale),
            )
        )

    long_runs = [
        r for r in _load_runs(records, mode="stream", clients=100) if r.get("duration_s", 0) >= 60
    ]
    base = [r for r in long_runs if r["slow_clients"] == 0]
    slow = [r for r in long_runs if r["slow_clients"] > 0]
    if base and slow:
        p99_base = _median(base, "ws", "hb_to_client_ms", "p99") or 0
        p99_slow = _median(slow, "ws", "hb_to_client_ms", "p99") or 0
        change = abs(p99_slow / p99_base - 1) * 100 if p99_base else float("inf")
        note = f"p99 {p99_base:.1f} -> {p99_slow:.1f} ms"
        add(Verdict("slow client: others' p99 change", change, 10, "%", False, len(slow), note))
        growth = statistics.median(
            r["master"]["rss_mb"]["max"] - r["master"]["rss_mb"]["start"] for r in slow
        )
        add(Verdict("slow client: master RSS growth", growth, 5, "MB", False, len(slow)))

    agent = [r for r in records if r.get("measure") == "worker agent"]
    if agent:
        cpu = statistics.median(float(r["cpu_pct_of_one_core"]) for r in agent)
        add(Verdict("worker agent at 5 s", cpu, 0.5, "% of a core", False, len(agent)))
    return verdicts


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def table(verdicts: list[Verdict]) -> str:
    lines = ["| target | measured | limit | runs | |", "|---|---|---|---|---|"]
    for v in verdicts:
        sign = ">=" if v.higher_is_better else "<="
        status = "met" if v.met else f"missed ({v.ratio:.1f}x)"
        measured = f"{_fmt(v.measured)} {v.unit}" + (f" ({v.note})" if v.note else "")
        lines.append(f"| {v.target} | {measured} | {sign} {v.limit:,g} | {v.runs} | {status} |")
    return "\n".join(lines)


def plot_targets(verdicts: list[Verdict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clip = 4.0  # ratios beyond are drawn at the edge, their value written beside
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(verdicts) + 1.2))
    names = [v.target for v in verdicts][::-1]
    ratios = [min(v.ratio, clip) for v in verdicts][::-1]
    colors = ["tab:green" if v.met else "tab:red" for v in verdicts][::-1]
    ax.barh(names, ratios, color=colors)
    ax.axvline(1.0, color="black", linewidth=1)
    for y, (v, ratio) in enumerate(zip(verdicts[::-1], ratios, strict=True)):
        label = f" {_fmt(v.measured)} {v.unit} ({v.ratio:.2g}x)"
        ax.annotate(label, (ratio, y), va="center", fontsize=8)
    ax.set_xlim(0, clip * 1.45)
    ax.set_xlabel("measured / limit (how far from the target; <= 1 is met)")
    ax.set_title("performance targets on the 2-core machine")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
