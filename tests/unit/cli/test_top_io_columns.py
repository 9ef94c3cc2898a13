"""`cloudai top`: network, disk and load columns on wide terminals when workers send them."""

from __future__ import annotations

import io

from rich.console import Console

from cloudai.cli.top import TopState, apply_message, compact_rate, io_cells, render

NOW = 1_000_000.0


def worker(worker_id: str, **extra: object) -> dict[str, object]:
    return {
        "worker_id": worker_id,
        "cpu_usage": 10.0,
        "memory_usage": 20.0,
        "gpu_usage": 0.0,
        "running_tasks": [],
        "last_update": NOW - 1,
        "is_active": True,
        "storage_usage": 5.0,
        "state": "active",
        **extra,
    }


RICH = {
    "net_rx_bytes_per_sec": 1536.0,
    "net_tx_bytes_per_sec": 300.0,
    "disk_read_bytes_per_sec": 0.0,
    "disk_write_bytes_per_sec": 5 * 1024 * 1024,
    "load_avg": [0.42, 0.3, 0.1],
}


def text_of(*workers: dict[str, object], width: int) -> str:
    state = TopState("ws://m:8080/ws/telemetry")
    state.connected(NOW)
    apply_message(state, {str(w["worker_id"]): w for w in workers}, True)
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, markup=False)
    console.print(render(state, NOW, width), crop=False)
    return buffer.getvalue()


def test_compact_rate() -> None:
    assert [compact_rate(v) for v in (0, 512, 1536, 30 * 1024, 5 * 1024**2, 2.5 * 1024**4)] == [
        "0",
        "512",
        "1.5K",
        "30K",
        "5.0M",
        "2.5T",
    ]
    assert compact_rate(None) == compact_rate(-1) == compact_rate(float("nan")) == "-"


def test_io_cells() -> None:
    cells = [c.plain for c in io_cells(worker("w1", **RICH))]
    assert cells == ["1.5K/300", "0/5.0M", "0.42"]
    assert [c.plain for c in io_cells(worker("w2"))] == ["-", "-", "-"]


def test_wide_terminal_shows_the_columns_when_a_worker_sends_them() -> None:
    text = text_of(worker("w1", **RICH), worker("w2"), width=170)
    assert "NET in/out" in text and "DISK r/w" in text and "LOAD" in text
    assert "1.5K/300" in text and "0/5.0M" in text and "0.42" in text


def test_no_columns_when_narrow_or_when_no_worker_sends_them() -> None:
    assert "NET in/out" not in text_of(worker("w1", **RICH), width=110)
    assert "NET in/out" not in text_of(worker("w1"), worker("w2"), width=200)
