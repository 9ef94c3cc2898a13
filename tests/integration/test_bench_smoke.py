"""A short run of `cloudai bench` against a fresh master, so the benchmark never rots.

Sane numbers, no errors, nothing lost; no timing thresholds (the machine may be busy).
"""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest

from cloudai.bench.config import BenchConfig
from cloudai.bench.runner import run_once
from tests.harness import REPO, child_env


@pytest.mark.parametrize("mode", ["unary", "stream"])
def test_bench_run_produces_sane_figures(mode: str) -> None:
    config = BenchConfig(
        mode=mode,
        workers=12,
        rate=200.0,
        clients=3,
        slow_clients=1,
        slow_after=0.5,
        slow_for=1.0,
        track_clients=2,
        tasks=2,
        duration=2.0,
        generators=2,
        drain=1.0,
    )
    record = run_once(config)
    assert record["errors"] == 0, record["error_kinds"]
    assert record["sent"] == 400  # open loop: exactly rate x duration, however slow
    assert record["accepted"] == record["sent"] and record["lost"] == 0
    assert record["achieved_rate"] == pytest.approx(200.0)
    if mode == "unary":
        rpc = record["rpc_ms"]
        assert 0 < rpc["p50"] <= rpc["p90"] <= rpc["p99"] <= rpc["max"]
    else:
        assert record["rpc_ms"] is None  # one answer per stream, no per-heartbeat latency
    ws = record["ws"]
    assert ws["tracked_clients"] == 2
    assert 0 < ws["hb_to_client_ms"]["p50"] <= ws["hb_to_client_ms"]["p99"]
    assert ws["stale"] == 0
    # A smoke run on a possibly busy machine: a starved client process can count a few
    # heartbeats as missed, and a master behind by a tick merges two heartbeats of one
    # worker into one entry (what an untracked client counts as a shortfall). The exact
    # accounting is unit-tested (tests/unit/bench).
    assert ws["missed"] <= record["sent"] * ws["tracked_clients"] // 20
    assert ws["untracked_shortfall"] <= record["sent"] // 20
    assert ws["deliveries_per_s"] > 0 and ws["dropped_clients"] == 0
    # Which heartbeats the master may merge: its own tick, read from GET /api/status.
    assert ws["fanout_tick_from"] == "master" and ws["fanout_tick_ms"] == pytest.approx(5.0)
    # The paused client ends with every worker's latest state.
    assert record["slow"]["stale"] == 0 and record["slow"]["messages"] > 0
    master = record["master"]
    assert master["cpu_pct"] > 0 and master["rss_mb"]["max"] > 10
    assert record["bench_cpu_pct"]["generators"] > 0
    assert record["generators"] == 2 and record["connections"] == 12


def test_floor_target_measures_the_do_nothing_grpc_server() -> None:
    config = BenchConfig(mode="stream", target="floor", workers=8, rate=200.0, duration=1.0)
    record = run_once(config)
    assert record["target"].startswith("floor")
    assert record["errors"] == 0 and record["accepted"] == record["sent"] == 200
    assert record["master"]["cpu_pct"] > 0 and record["master"]["rss_mb"]["max"] > 10


def test_bench_command_prints_json_and_a_table(tmp_path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cloudai",
            "bench",
            "--workers",
            "4",
            "--rate",
            "100",
            "--duration",
            "1",
            "--generators",
            "1",
            "--quiet",
            "--json-out",
            str(tmp_path / "runs.jsonl"),
        ],
        capture_output=True,
        env=child_env(),
        cwd=REPO,
        timeout=90,
        check=False,
    )
    assert out.returncode == 0, out.stderr.decode()
    lines = out.stdout.decode().splitlines()
    record = orjson.loads(lines[0])
    assert record["mode"] == "unary" and record["errors"] == 0 and record["sent"] == 100
    assert any(line.lstrip().startswith("mode") for line in lines[1:])  # the table header
    assert orjson.loads((tmp_path / "runs.jsonl").read_text()) == record


def test_print_register_lines() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cloudai", "bench", "--print-register", "--workers", "3"],
        capture_output=True,
        env=child_env(),
        cwd=REPO,
        timeout=30,
        check=True,
    )
    assert out.stdout.decode().splitlines() == [
        "register bench-00000 127.0.0.1:9",
        "register bench-00001 127.0.0.1:9",
        "register bench-00002 127.0.0.1:9",
    ]
