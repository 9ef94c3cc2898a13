"""A run's figures as one JSON-ready record, and a readable table of several runs."""

from __future__ import annotations

import datetime
import os
import platform
from importlib import metadata
from typing import Any

from cloudai.bench.config import BenchConfig
from cloudai.bench.monitor import ProcessMonitor

_VERSIONED = ("cloudai", "grpcio", "protobuf", "aiohttp", "uvloop", "orjson", "psutil", "picows")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "kernel": platform.release()}


def _pct(seconds: float | None, duration: float) -> float | None:
    return None if seconds is None else round(100.0 * seconds / duration, 1)


def _per(total: int | None, count: int) -> int | None:
    return None if total is None or count <= 0 else round(total / count)


def build_record(
    config: BenchConfig,
    gen: dict[str, Any],
    cli: dict[str, Any] | None,
    monitor: ProcessMonitor | None,
    layout: dict[str, int],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One run's record; ``extra`` (e.g. ``enrolment`` with ``--tls``) is added as is."""
    duration = config.duration
    record: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "label": config.label,
        "mode": config.mode,
        "workers": config.workers,
        "offered_rate": config.rate,
        "clients": config.clients,
        "slow_clients": config.slow_clients,
        "tasks": config.tasks,
        "duration_s": duration,
        "target": config.grpc
        or ("floor (do-nothing gRPC server)" if config.target == "floor" else "own master"),
        # --tls: mutual TLS on gRPC (a certificate and a connection per worker), WSS and
        # API tokens; false: the plaintext protocol (our master with --insecure)
        "tls": config.tls,
        # the gRPC server kind of a fresh master or floor ("aio" or "sync"; None: its
        # default), and whether each heartbeat came on a new connection (Go's pattern)
        "server": config.server,
        "new_connection_per_heartbeat": config.new_connection_per_heartbeat,
        **layout,
        **(extra or {}),
        "sent": gen["sent"],
        "accepted": gen["accepted"],
        "achieved_rate": round(gen["accepted"] / duration, 1),
        "lost": gen["sent"] - gen["accepted"],
        "connects": gen.get("connects", 0),
        "errors": sum(gen["errors"].values()),
        "error_kinds": gen["errors"],
        "rpc_ms": gen["rpc"].summary() if gen["rpc"].count else None,
        "send_lag_ms": gen["lag"].summary((50, 99)),
        "max_in_flight": gen["max_in_flight"],
        "stream_backlog_bytes": gen["max_backlog"],
        "bench_cpu_pct": {
            "generators": _pct(gen["cpu_seconds"], duration),
            "clients": _pct(cli["cpu_seconds"], duration) if cli else None,
        },
    }
    if cli is not None:
        record["ws"] = {
            "hb_to_client_ms": cli["latency"].summary() if cli["latency"].count else None,
            "tracked_clients": cli["tracked"],
            "deliveries_per_s": round(cli["entries"] / duration, 1),
            "frames_per_s": round(cli["messages"] / duration, 1),
            "missed": cli["missed"],
            "coalesced": cli["coalesced"],
            "stale": cli["stale"],
            "untracked_shortfall": cli["untracked_shortfall"],
            "dropped_clients": cli["dropped"],
            "catch_up_s": round(cli["quiet_wait"], 2),  # after the drain, until all quiet
            # the tick that decided "coalesced": reported by the master, or assumed
            "fanout_tick_ms": cli.get("fanout_tick_ms"),
            "fanout_tick_from": cli.get("fanout_tick_from"),
            "subscriptions": config.subscriptions,
            "deflate": config.ws_deflate,
            "deflate_clients": cli.get("deflate_clients", 0),
            # per client that keeps up, over the load and the drain: what it decoded, and
            # what came over the wire (headers, compression; None: not measurable)
            "payload_bytes_per_client": _per(cli.get("payload_bytes"), cli["clients"]),
            "wire_bytes_per_client": _per(cli.get("wire_bytes"), cli["clients"]),
        }
        if config.slow_clients:
            record["slow"] = {
                "clients": cli["slow_clients"],
                "paused_s": config.slow_for,
                "stale": cli["slow_stale"],
                "messages": cli["slow_messages"],
                "hb_to_client_ms": cli["slow_latency"].summary((50, 99)),
            }
    if monitor is not None:
        record["master"] = {
            "pid": monitor.pid,
            "cpu_pct": _pct(monitor.cpu_used, duration),
            "rss_mb": monitor.rss_summary_mb(),
        }
        busy = monitor.machine_busy
        if busy is not None:
            ours = (monitor.cpu_used or 0.0) + gen["cpu_seconds"]
            ours += cli["cpu_seconds"] if cli else 0.0
            # Everything else the machine ran meanwhile (other jobs disturb the figures).
            record["machine_busy_pct"] = _pct(busy, duration)
            record["other_cpu_pct"] = _pct(max(0.0, busy - ours), duration)
    record["versions"] = versions()
    record["machine"] = machine()
    return record


# -- table ---------------------------------------------------------------------------------

_COLUMNS: tuple[tuple[str, str], ...] = (
    ("mode", "mode"),
    ("tls", "tls"),
    ("workers", "workers"),
    ("clients", "clients"),
    ("offered/s", "offered_rate"),
    ("achieved/s", "achieved_rate"),
    ("rpc p50", "rpc_ms.p50"),
    ("p90", "rpc_ms.p90"),
    ("p99", "rpc_ms.p99"),
    ("max ms", "rpc_ms.max"),
    ("hb->ws p50", "ws.hb_to_client_ms.p50"),
    ("p99 ms", "ws.hb_to_client_ms.p99"),
    ("missed", "ws.missed"),
    ("stale", "ws.stale"),
    ("errors", "errors"),
    ("master cpu%", "master.cpu_pct"),
    ("rss MB", "master.rss_mb.max"),
    ("gen cpu%", "bench_cpu_pct.generators"),
    ("ws cpu%", "bench_cpu_pct.clients"),
    ("other cpu%", "other_cpu_pct"),
    ("target", "target_short"),
    ("server", "server"),
)


def _get(record: dict[str, Any], dotted: str) -> Any:
    if dotted == "target_short":
        target = str(record.get("target", "own master"))
        kind = "ours" if target == "own master" else target
        kind = "floor" if target.startswith("floor") else kind
        return kind + ("+newconn" if record.get("new_connection_per_heartbeat") else "")
    value: Any = record
    for key in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value.is_integer() and abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(records: list[dict[str, Any]]) -> str:
    header = [title for title, _key in _COLUMNS]
    rows = [[_cell(_get(record, key)) for _title, key in _COLUMNS] for record in records]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)
