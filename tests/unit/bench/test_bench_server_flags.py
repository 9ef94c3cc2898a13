"""``--target ours,floor``, ``--server aio,sync`` and ``--new-connection-per-heartbeat``:
what they expand into (runs by turns, so compared runs share the machine's minutes)."""

from __future__ import annotations

import argparse

import pytest

from cloudai.bench import cli
from cloudai.bench.config import BenchConfig


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    return parser.parse_args(["bench", *argv])


def test_targets_and_servers_take_turns_within_each_repeat() -> None:
    args = parse("--target", "ours,floor", "--server", "aio,sync", "--repeat", "2")
    runs = [(c.target, c.server) for c in cli.configs_from_args(args)]
    one_turn = [("ours", "aio"), ("ours", "sync"), ("floor", "aio"), ("floor", "sync")]
    assert runs == one_turn * 2


def test_the_floor_beside_ours_runs_without_clients() -> None:
    args = parse("--target", "ours,floor", "--clients", "10")
    ours, floor = cli.configs_from_args(args)
    assert ours.clients == 10 and floor.clients == 0


def test_a_sync_server_is_left_out_of_stream_runs_of_a_comparison() -> None:
    args = parse("--mode", "unary,stream", "--server", "aio,sync")
    runs = [(c.mode, c.server) for c in cli.configs_from_args(args)]
    assert runs == [("unary", "aio"), ("unary", "sync"), ("stream", "aio")]


def test_defaults_leave_the_server_to_the_target() -> None:
    (config,) = cli.configs_from_args(parse())
    assert config.server is None and not config.new_connection_per_heartbeat
    assert config.target == "ours"


def test_new_connection_per_heartbeat_flag() -> None:
    (config,) = cli.configs_from_args(parse("--new-connection-per-heartbeat"))
    assert config.new_connection_per_heartbeat


def test_invalid_combinations_are_refused() -> None:
    with pytest.raises(ValueError, match="unary calls only"):
        BenchConfig(mode="stream", server="sync").validate()
    with pytest.raises(ValueError, match="unary mode"):
        BenchConfig(mode="stream", new_connection_per_heartbeat=True).validate()
    with pytest.raises(ValueError, match="not --grpc"):
        BenchConfig(server="sync", grpc="h:1", ws_url="ws://h:2").validate()
    with pytest.raises(SystemExit):
        parse("--server", "threads")
