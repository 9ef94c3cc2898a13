"""Issue 5's targets judged from recorded runs (synthetic records, same shape)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cloudai.bench import targets


def run(mode: str, rate: float, **extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "mode": mode,
        "offered_rate": rate,
        "achieved_rate": rate,
        "workers": 1000,
        "clients": 0,
        "slow_clients": 0,
        "duration_s": 10.0,
        "target": "own master",
        "sent": int(rate * 10),
        "lost": 0,
        "errors": 0,
        "rpc_ms": None,
        "ws": None,
        "master": {"cpu_pct": 40.0, "rss_mb": {"start": 100.0, "end": 101.0, "max": 102.0}},
    }
    for key, value in extra.items():
        record[key] = value
    return record


def ws(p50: float, p99: float, missed: int = 0) -> dict[str, Any]:
    return {"hb_to_client_ms": {"p50": p50, "p99": p99}, "missed": missed}


def by_target(records: list[dict[str, Any]]) -> dict[str, targets.Verdict]:
    return {v.target: v for v in targets.judge(records)}


def test_ingest_rates_are_the_highest_that_pass() -> None:
    verdicts = by_target(
        [
            run("unary", 1000, rpc_ms={"p99": 3.0}),
            run("unary", 2000, rpc_ms={"p99": 4.9}),
            run("unary", 3000, rpc_ms={"p99": 40.0}),  # too slow
            run("unary", 5000, rpc_ms={"p99": 2.0}, lost=100),  # shed calls
            run("unary", 9000, rpc_ms={"p99": 3.0}, target="floor (do-nothing gRPC server)"),
            run("stream", 20000, clients=1, ws=ws(6.0, 120.0)),
            run("stream", 25000, clients=1, ws=ws(800.0, 1600.0)),  # fell behind
        ]
    )
    unary = verdicts["unary ingest at RPC p99 <= 5 ms"]
    assert unary.measured == 2000 and not unary.met and unary.ratio == pytest.approx(2.5)
    stream = verdicts["streaming ingest, nothing lost, kept up"]
    assert stream.measured == 20000 and stream.met


def test_fan_out_scale_slow_client_and_agent() -> None:
    records = [
        run("stream", 1000, clients=100, duration_s=20.0, ws=ws(5.0, p99))
        for p99 in (10.0, 10.6, 13.0)
    ]
    records.append(run("stream", 1000, clients=1000, duration_s=20.0, ws=ws(40.0, 80.0, 2)))
    records.append(
        run(
            "stream",
            2000,
            workers=10000,
            clients=10,
            master={"cpu_pct": 46.0, "rss_mb": {"start": 480.0, "end": 500.0, "max": 530.0}},
        )
    )
    records.append(run("stream", 1000, clients=100, duration_s=70.0, ws=ws(5.0, 16.0)))
    slow_master = {"cpu_pct": 45.0, "rss_mb": {"start": 148.0, "end": 150.0, "max": 151.0}}
    records.append(
        run(
            "stream",
            1000,
            clients=100,
            slow_clients=1,
            duration_s=70.0,
            ws=ws(5.0, 17.0),
            master=slow_master,
        )
    )
    records.append({"measure": "worker agent", "cpu_pct_of_one_core": 0.09})
    verdicts = by_target(records)
    assert verdicts["fan-out 1,000/s to 100 clients: p99"].measured == 10.6  # median of 3
    assert verdicts["fan-out 1,000/s to 100 clients: p99"].met
    thousand = verdicts["fan-out 1,000/s to 1,000 clients: p99"]
    assert not thousand.met and thousand.note == "missed 2"
    assert verdicts["10,000 workers: master CPU"].met
    assert verdicts["10,000 workers: master RSS"].ratio == pytest.approx(530 / 150)
    change = verdicts["slow client: others' p99 change"]
    assert change.measured == pytest.approx(6.25) and change.met
    assert verdicts["slow client: master RSS growth"].measured == pytest.approx(3.0)
    assert verdicts["worker agent at 5 s"].met
    table = targets.table(list(verdicts.values()))
    assert "| 10,000 workers: master RSS | 530 MB | <= 150 | 1 | missed (3.5x) |" in table


def test_nothing_recorded_nothing_judged(tmp_path: Path) -> None:
    assert targets.judge([]) == []
    path = tmp_path / "targets.png"
    targets.plot_targets([targets.Verdict("x", 2.0, 1.0, "ms", False, 1)], path)
    assert path.read_bytes()[:4] == b"\x89PNG"
