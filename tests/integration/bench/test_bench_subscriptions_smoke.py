"""A short `cloudai bench` run with --subscriptions and --ws-deflate against a fresh
master, so these options never rot. Sane figures, nothing lost, no timing thresholds."""

from __future__ import annotations

import pytest

from cloudai.bench.clients import subscription_path
from cloudai.bench.config import BenchConfig
from cloudai.bench.runner import run_once


def test_subscription_paths_are_distinct_and_select_every_worker() -> None:
    assert subscription_path("/ws/telemetry", "bench-", 0, 5) == "/ws/telemetry"
    assert subscription_path("/ws/telemetry", "bench-", 1, 5) == "/ws/telemetry?workers=bench-*"
    paths = {subscription_path("/ws/telemetry", "bench-", 3, i) for i in range(9)}
    assert paths == {f"/ws/telemetry?workers=bench-*,unused-{k}" for k in range(3)}


@pytest.mark.parametrize("deflate", [False, True], ids=["plain", "deflate"])
def test_bench_with_subscriptions_produces_sane_figures(deflate: bool) -> None:
    config = BenchConfig(
        mode="stream",
        workers=12,
        rate=200.0,
        clients=6,
        track_clients=3,
        subscriptions=3,
        ws_deflate=deflate,
        duration=2.0,
        drain=1.0,
        client_processes=2,
    )
    record = run_once(config)
    assert record["errors"] == 0 and record["lost"] == 0
    ws = record["ws"]
    assert ws["subscriptions"] == 3 and ws["deflate"] is deflate
    assert ws["deflate_clients"] == (6 if deflate else 0)
    assert ws["stale"] == 0 and ws["dropped_clients"] == 0
    # Every subscription selects every worker: the trackers see every heartbeat.
    assert ws["missed"] <= record["sent"] * ws["tracked_clients"] // 20
    assert ws["untracked_shortfall"] <= record["sent"] // 20
    payload, wire = ws["payload_bytes_per_client"], ws["wire_bytes_per_client"]
    assert payload > 0 and wire > 0
    if deflate:
        assert wire < payload  # compressed on the wire
    else:
        assert wire > payload  # frame headers on top of the JSON
    assert record["master"]["cpu_pct"] > 0
