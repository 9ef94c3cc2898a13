"""Short runs of the bench's server kinds (``--server aio|sync``) and of the Go worker's
pattern (``--new-connection-per-heartbeat``), so they never rot. Sane figures, nothing
lost; no timing thresholds (the machine may be busy)."""

from __future__ import annotations

import pytest

from cloudai.bench.config import BenchConfig
from cloudai.bench.runner import run_once


@pytest.mark.parametrize(
    ("target", "server", "new_connection"),
    [
        ("ours", "sync", False),
        ("ours", "sync", True),
        ("ours", "aio", True),
        ("floor", "sync", True),
    ],
)
def test_server_kinds_and_new_connections(target: str, server: str, new_connection: bool) -> None:
    config = BenchConfig(
        mode="unary",
        target=target,
        server=server,
        new_connection_per_heartbeat=new_connection,
        workers=10,
        rate=100.0,
        duration=2.0,
        drain=0.5,
        clients=2 if target == "ours" else 0,
        track_clients=2,
    )
    record = run_once(config)
    assert record["errors"] == 0, record["error_kinds"]
    assert record["sent"] == 200 and record["accepted"] == 200 and record["lost"] == 0
    assert record["server"] == server
    assert record["new_connection_per_heartbeat"] is new_connection
    assert record["connects"] == (200 if new_connection else 0)  # one per heartbeat
    rpc = record["rpc_ms"]
    assert 0 < rpc["p50"] <= rpc["p99"] <= rpc["max"]
    assert record["master"]["cpu_pct"] > 0
    if target == "ours":  # heartbeats taken on gRPC's threads reach the dashboards
        ws = record["ws"]
        assert 0 < ws["hb_to_client_ms"]["p50"] <= ws["hb_to_client_ms"]["p99"]
        assert ws["stale"] == 0 and ws["missed"] <= record["sent"] * 2 // 20


def test_a_secure_master_on_the_sync_server_checks_certificates_on_its_threads() -> None:
    config = BenchConfig(
        mode="unary", server="sync", tls=True, workers=6, rate=60.0, duration=2.0, drain=0.5
    )
    record = run_once(config)
    assert record["tls"] is True and record["server"] == "sync"
    assert record["errors"] == 0, record["error_kinds"]
    assert record["accepted"] == record["sent"] == 120
