from __future__ import annotations

import argparse

import pytest

from cloudai.bench import cli
from cloudai.bench.config import BenchConfig, batch_window
from cloudai.bench.report import table
from cloudai.bench.runner import fanout_tick_of, status_url


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    return parser.parse_args(["bench", *argv])


def test_a_sweep_expands_into_one_config_per_mode_rate_and_repeat() -> None:
    args = parse("--mode", "unary,stream", "--rates", "1000,5000", "--repeat", "2")
    configs = cli.configs_from_args(args)
    assert [(c.mode, c.rate) for c in configs] == [
        ("unary", 1000.0),
        ("unary", 1000.0),
        ("unary", 5000.0),
        ("unary", 5000.0),
        ("stream", 1000.0),
        ("stream", 1000.0),
        ("stream", 5000.0),
        ("stream", 5000.0),
    ]
    assert args.func is cli.run


def test_defaults_and_target_flags() -> None:
    (config,) = cli.configs_from_args(
        parse("--grpc", "10.0.0.1:50051", "--ws-url", "ws://10.0.0.1:8080", "--master-pid", "42")
    )
    assert config.grpc == "10.0.0.1:50051" and config.master_pid == 42
    assert config.target == "ours"
    assert (config.workers, config.rate, config.duration, config.mode) == (
        100,
        1000.0,
        10.0,
        "unary",
    )


@pytest.mark.parametrize("bad", [["--mode", "bidi"], ["--rates", "1000,x"], ["--rates", "0"]])
def test_bad_flags_are_refused(bad: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse(*bad)


def test_inconsistent_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        cli.configs_from_args(parse("--slow-clients", "1", "--slow-for", "60", "--duration", "5"))
    with pytest.raises(ValueError):
        BenchConfig(workers=0).validate()
    with pytest.raises(ValueError, match="floor"):  # the floor server has no WebSocket
        cli.configs_from_args(parse("--target", "floor", "--clients", "10"))
    with pytest.raises(SystemExit):
        parse("--target", "go")


def test_batch_window_is_the_tick_plus_timer_slack() -> None:
    assert batch_window(5.0) == pytest.approx(0.006)
    assert batch_window(25.0) == pytest.approx(0.026)
    assert batch_window(0.0) == pytest.approx(0.001)  # a master that does not batch


def test_assumed_tick_is_the_flag_or_our_masters_default() -> None:
    assert BenchConfig(clients=1000).assumed_tick_ms == 5.0
    assert BenchConfig(clients=10, ws_batch_ms=50).assumed_tick_ms == 50.0


def test_the_masters_tick_is_read_from_its_status() -> None:
    assert status_url("ws://127.0.0.1:8080/ws/telemetry") == "http://127.0.0.1:8080/api/status"
    assert status_url("ws://[::1]:9/ws/telemetry") == "http://[::1]:9/api/status"
    assert fanout_tick_of({"workers": 3, "fanout_tick_ms": 25.0}) == 25.0
    assert fanout_tick_of({"fanout_tick_ms": 5}) == 5.0
    # Not reported (another master, an older one, an error document): the bench assumes.
    for document in ({"workers": 3}, {"fanout_tick_ms": "5"}, {"fanout_tick_ms": 0}, [], None):
        assert fanout_tick_of(document) is None
    assert fanout_tick_of({"fanout_tick_ms": True}) is None


def test_register_lines_for_masters_that_need_them() -> None:
    assert cli.register_lines(2, "bench-", "10.0.0.9:50052") == [
        "register bench-00000 10.0.0.9:50052",
        "register bench-00001 10.0.0.9:50052",
    ]


def test_client_processes_scale_with_clients() -> None:
    assert BenchConfig(clients=0).client_process_count == 0
    assert BenchConfig(clients=10).client_process_count == 1
    assert BenchConfig(clients=1000).client_process_count == 4
    assert BenchConfig(clients=1000, client_processes=2).client_process_count == 2


def test_table_lines_up_and_shows_missing_values_as_dashes() -> None:
    records = [
        {
            "mode": "unary",
            "workers": 1000,
            "clients": 0,
            "offered_rate": 5000.0,
            "achieved_rate": 4999.5,
            "rpc_ms": {"p50": 0.81, "p90": 1.2, "p99": 3.456, "max": 9.0},
            "errors": 0,
            "master": {"cpu_pct": 81.0, "rss_mb": {"max": 120.3}},
        },
        {
            "mode": "stream",
            "workers": 1000,
            "clients": 100,
            "offered_rate": 20000.0,
            "achieved_rate": 20000.0,
            "rpc_ms": None,
            "ws": {"hb_to_client_ms": {"p50": 2.0, "p99": 8.5}, "missed": 0, "stale": 0},
            "errors": 0,
        },
    ]
    lines = table(records).splitlines()
    assert len(lines) == 4 and len({len(line) for line in lines}) == 1
    assert "3.46" in lines[2] and "20,000" in lines[3]
    assert lines[3].split()[6] == "-"  # no RPC latency for streams (after mode, tls, ...)
