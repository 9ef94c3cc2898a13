"""`cloudai history` without a master: durations, sparklines, the summary figures, the
table, the chart, and the one line said when matplotlib is missing."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from cloudai.cli import history as cli
from cloudai.cli.main import main


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("90s", 90.0), ("15m", 900.0), ("1h", 3600.0), ("7d", 604_800.0)],
)
def test_since(text: str, seconds: float) -> None:
    assert cli.parse_since(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "1y", "-5m", "h"])
def test_since_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        cli.parse_since(text)


def test_sparkline_scales_and_leaves_gaps() -> None:
    assert cli.sparkline([0.0, 50.0, None, 100.0]) == "▁▅ █"
    assert cli.sparkline([None, None]) == "  "
    assert cli.sparkline([3.0, 3.0]) == "▅▅"
    assert cli.sparkline([0.0, 0.0]) == "▁▁"
    line = cli.sparkline([float(i) for i in range(300)], width=60)
    assert len(line) == 60 and line[0] == "▁" and line[-1] == "█"


def body(worker_id: str | None = "w1") -> dict[str, Any]:
    out: dict[str, Any] = {"worker_id": worker_id} if worker_id else {}
    out.update(
        {
            "tier": 1,
            "resolution": 60.0,
            "from": 1_700_000_000.0,
            "to": 1_700_000_180.0,
            "t": [1_700_000_000.0, 1_700_000_060.0, 1_700_000_120.0],
            "series": {
                "cpu_usage": {
                    "avg": [10.0, None, 30.0],
                    "min": [5.0, None, 1.0],
                    "max": [20.0, None, 90.0],
                },
                "memory_used_bytes": {
                    "avg": [2048.0] * 3,
                    "min": [1024.0] * 3,
                    "max": [4096.0] * 3,
                },
                "gpu_usage": {"avg": [None] * 3, "min": [None] * 3, "max": [None] * 3},
            },
        }
    )
    if worker_id is None:
        out["workers"] = [2, 0, 1]
    return out


def test_summary_and_table() -> None:
    assert cli.summary(body()["series"]["cpu_usage"]) == (1.0, 20.0, 90.0, 30.0)
    console = Console(width=160, record=True)
    console.print(cli.render(body()))
    text = console.export_text()
    assert "w1: 2023-11-14 22:13:20 - 22:16:20 UTC, tier 1, a point every 60 s" in text
    assert "cpu_usage" in text and "1.0%" in text and "90.0%" in text and "30.0%" in text
    assert "2.0 KiB" in text and "4.0 KiB" in text
    assert "gpu_usage" not in text  # nothing sent: no row


def test_formats() -> None:
    assert cli.format_value("running_tasks", 2.0) == "2"
    assert cli.format_value("running_tasks", 2.5) == "2.5"
    assert cli.format_value("net_rx_bytes_per_sec", 3 * 1024**2) == "3.0 MiB/s"
    assert cli.format_value("load_avg_1m", 0.5) == "0.50"
    assert cli.format_value("cpu_usage", None) == "-"


def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "h.png"
    cli.plot(body(None), path)
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_without_matplotlib_one_line_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    code = main(["history", "w1", "--plot", str(tmp_path / "x.png"), "--url", "http://127.0.0.1:9"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == "error: --plot needs matplotlib: pip install 'cloudai[plot]'\n"


def test_worker_or_cluster(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["history", "--url", "http://127.0.0.1:9"]) == 2
    assert main(["history", "w1", "--cluster", "--url", "http://127.0.0.1:9"]) == 2
    assert "give a WORKER id or --cluster" in capsys.readouterr().err
