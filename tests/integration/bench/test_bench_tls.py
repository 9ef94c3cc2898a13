"""``cloudai bench --tls`` against a real secure master: every simulated worker joins
(``POST /api/join``), presents its own certificate on its own TLS connection, and the
master accepts every heartbeat; the dashboards read over WSS with the admin token.

Sane numbers, nothing refused or lost; no timing thresholds (the machine may be busy).
"""

from __future__ import annotations

import subprocess
import sys

import orjson

from cloudai.bench.config import BenchConfig
from cloudai.bench.runner import run_once
from tests.harness import REPO, child_env


def test_bench_tls_command_streams_into_a_secure_master(tmp_path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cloudai",
            "bench",
            "--tls",
            "--mode",
            "stream",
            "--workers",
            "20",
            "--rate",
            "200",
            "--duration",
            "5",
            "--clients",
            "2",
            "--drain",
            "1",
            "--quiet",
            "--json-out",
            str(tmp_path / "runs.jsonl"),
        ],
        capture_output=True,
        env=child_env(),
        cwd=REPO,
        timeout=180,
        check=False,
    )
    assert out.returncode == 0, out.stderr.decode()
    record = orjson.loads(out.stdout.decode().splitlines()[0])
    assert record["tls"] is True and record["target"] == "own master"
    assert record["enrolment"]["workers"] == 20 and record["enrolment"]["seconds"] > 0
    assert record["connections"] == 20  # one TLS connection per worker, its own certificate
    assert record["errors"] == 0, record["error_kinds"]
    assert record["sent"] == 1000 and record["accepted"] == 1000 and record["lost"] == 0
    ws = record["ws"]  # over WSS, with the admin token
    assert ws["dropped_clients"] == 0 and ws["stale"] == 0
    assert 0 < ws["hb_to_client_ms"]["p50"] <= ws["hb_to_client_ms"]["p99"]
    assert ws["missed"] <= record["sent"] * ws["tracked_clients"] // 20  # see the smoke test
    assert ws["fanout_tick_from"] == "master"  # GET /api/status over HTTPS with the token
    assert record["master"]["cpu_pct"] > 0


def test_unary_calls_over_tls_are_all_accepted() -> None:
    config = BenchConfig(mode="unary", tls=True, workers=20, rate=100.0, duration=2.0, drain=0.5)
    record = run_once(config)
    assert record["tls"] is True and record["connections"] == 20
    assert record["errors"] == 0, record["error_kinds"]
    assert record["sent"] == record["accepted"] == 200
    rpc = record["rpc_ms"]
    assert 0 < rpc["p50"] <= rpc["p99"] <= rpc["max"]
