"""`cloudai top`: the pure parts (state, keys, order, frame) and the capacity poller
with a fake fetch. The stream follower against a real socket is in
tests/integration/test_top_pty.py."""

from __future__ import annotations

import argparse
import asyncio
import io
import re
from typing import Any

import pytest
from rich.console import Console

from cloudai.cli import top
from cloudai.cli.top import (
    SORT_KEYS,
    TopState,
    TopView,
    apply_message,
    apply_totals,
    bar,
    keys_of,
    poll_totals,
    press,
    render,
    sort_workers,
)
from tests.harness import async_wait_until

NOW = 1_000_000.0


def worker(
    worker_id: str,
    cpu: float = 42.0,
    active: bool = True,
    tasks: int = 1,
    last_update: float | None = NOW - 4,
    memory: float = 33.0,
) -> dict[str, Any]:
    return {
        "worker_id": worker_id,
        "cpu_usage": cpu,
        "memory_usage": memory,
        "gpu_usage": 7.0,
        "running_tasks": [{"task_id": f"t{i}"} for i in range(tasks)],
        "last_update": last_update,
        "is_active": active,
        "storage_usage": 20.0,
    }


def capacity(worker_id: str, cores: float = 8, memory: float = 16, gpus: float = 1) -> dict:
    return {
        "worker_id": worker_id,
        "address": "10.0.0.5:50052",
        "total_cpu": cores,
        "total_memory": memory,
        "total_storage": 100.0,
        "total_gpu": gpus,
    }


def text_of(
    state: TopState,
    width: int = 110,
    sort: str = "id",
    view: TopView | None = None,
    full_ids: bool = False,
) -> str:
    """As rich.live draws it: wrapped to the terminal's width."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, markup=False)
    console.print(render(state, NOW, width, sort, view=view, full_ids=full_ids), crop=False)
    return buffer.getvalue()


def connected(*workers: dict[str, Any]) -> TopState:
    state = TopState("ws://m:8080/ws/telemetry")
    state.connected(NOW)
    apply_message(state, {w["worker_id"]: w for w in workers}, True)
    return state


def row_order(text: str) -> list[str]:
    return [m[1] for m in re.finditer(r"^(w\d)\s", text, re.MULTILINE)]


# -- state ------------------------------------------------------------------------------------


def test_snapshot_replaces_updates_merge() -> None:
    state = TopState("ws://m/ws/telemetry")
    apply_message(state, {"w1": worker("w1"), "w2": worker("w2")}, snapshot=True)
    apply_message(state, {"w2": worker("w2", cpu=90.0)}, snapshot=False)
    assert state.workers["w2"]["cpu_usage"] == 90.0 and set(state.workers) == {"w1", "w2"}
    apply_message(state, {"w3": worker("w3")}, snapshot=True)  # after a reconnect
    assert set(state.workers) == {"w3"}
    assert (state.messages, state.snapshots) == (3, 2)
    apply_message(state, {"junk": 5}, snapshot=False)
    assert "junk" not in state.workers


def test_totals_are_kept_by_worker_and_merged_into_the_stream_data() -> None:
    state = connected(worker("w1"))
    assert apply_totals(state, [capacity("w1"), {"no": "id"}, "junk"], NOW)
    assert state.totals == {
        "w1": {"total_cpu": 8, "total_memory": 16, "total_storage": 100, "total_gpu": 1}
    }
    assert state.worker("w1")["total_memory"] == 16 and state.worker("w1")["cpu_usage"] == 42
    assert state.totals_at == NOW
    # Not a list of workers (an error body, a proxy's page): ignored, the old ones stay.
    assert not apply_totals(state, {"error": "nope"}, NOW + 1)
    assert not apply_totals(state, None, NOW + 1)
    assert state.totals["w1"]["total_cpu"] == 8 and state.totals_at == NOW


# -- keys -------------------------------------------------------------------------------------


def test_keys_change_the_view() -> None:
    view = TopView()
    assert press(view, "c") and (view.sort, view.reverse) == ("cpu", False)
    assert press(view, "r") and view.reverse
    assert press(view, "m") and (view.sort, view.reverse) == ("mem", False)  # a new order
    for key, order in (("g", "gpu"), ("t", "tasks"), ("i", "id"), ("s", "state"), ("C", "cpu")):
        assert press(view, key) and view.sort == order
    assert press(view, "?") and view.help
    assert press(view, "h") and not view.help
    assert press(view, "H") and view.help
    assert press(view, "\x1b") and not view.help  # Esc hides the help...
    assert not press(view, "\x1b")  # ...and does nothing else
    assert not press(view, "x") and not press(view, " ")
    assert not view.quit
    assert press(view, "q") and view.quit
    assert press(TopView(), "Q")


def test_keys_of_a_read() -> None:
    assert keys_of(b"c") == ["c"]
    assert keys_of(b"cr") == ["c", "r"]  # typed fast: one read
    assert keys_of(b"\x1b") == ["\x1b"]
    assert keys_of(b"\x1b[C") == []  # the right arrow is not "c"
    assert keys_of(b"\x1bOP") == []  # F1


def test_sort_flag_keeps_every_value_and_adds_state() -> None:
    assert set(SORT_KEYS) >= {"id", "cpu", "mem", "gpu", "tasks", "state"}
    parser = argparse.ArgumentParser()
    top.register(parser.add_subparsers())
    args = parser.parse_args(["top", "--sort", "mem", "--reverse"])
    assert (args.sort, args.reverse) == ("mem", True)
    assert parser.parse_args(["top"]).sort == "id"


# -- order ------------------------------------------------------------------------------------


def test_sort() -> None:
    workers = {"a": worker("a", 10, tasks=3), "b": worker("b", 90, tasks=0), "c": worker("c", 50)}
    assert [w["worker_id"] for w in sort_workers(workers, "id")] == ["a", "b", "c"]
    assert [w["worker_id"] for w in sort_workers(workers, "id", reverse=True)] == ["c", "b", "a"]
    assert [w["worker_id"] for w in sort_workers(workers, "cpu")] == ["b", "c", "a"]
    assert [w["worker_id"] for w in sort_workers(workers, "cpu", True)] == ["a", "c", "b"]
    assert [w["worker_id"] for w in sort_workers(workers, "tasks")] == ["a", "c", "b"]


def test_sort_puts_unknown_values_last_either_way() -> None:
    workers = {
        "a": worker("a", 10),
        "n": worker("n", 0.0, active=False, last_update=None),  # never seen: unknown
        "z": worker("z", 80),
    }
    assert [w["worker_id"] for w in sort_workers(workers, "cpu")] == ["z", "a", "n"]
    assert [w["worker_id"] for w in sort_workers(workers, "cpu", True)] == ["a", "z", "n"]
    assert [w["worker_id"] for w in sort_workers(workers, "state", True)] == ["a", "z", "n"]


def test_sort_by_state_then_last_heartbeat() -> None:
    workers = {
        "old": worker("old", last_update=NOW - 50),
        "new": worker("new", last_update=NOW - 1),
        "gone": worker("gone", active=False, last_update=NOW - 100),
        "never": worker("never", active=False, last_update=None),
    }
    assert [w["worker_id"] for w in sort_workers(workers, "state")] == [
        "new",
        "old",
        "gone",
        "never",
    ]


# -- frame ------------------------------------------------------------------------------------


def test_bar() -> None:
    assert bar(0, 10).plain == "░" * 10 + "   0.0%"
    assert bar(100, 10).plain == "█" * 10 + " 100.0%"
    assert bar(42, 10).plain == "████▏░░░░░  42.0%"
    assert len(bar(42, 10).plain) == 17
    assert bar(250, 4).plain == "████ 250.0%"  # the bar is capped, the figure is not
    assert bar("x", 4).plain == "░░░░   0.0%"
    assert bar(None, 4).plain == "          -"  # unknown: no bar, a dash
    assert len(bar(None, 4).plain) == len(bar(4, 4).plain)


def test_render_connected() -> None:
    state = connected(worker("w1"), worker("w2", 5.0, active=False, tasks=0))
    text = text_of(state)
    assert "cloudai top  ws://m:8080/ws/telemetry  ● connected  sort: id, A to Z" in text
    assert "workers 2 (1 active)   tasks 1   avg cpu 42.0%   mem 33.0%   gpu 7.0%" in text
    assert "capacity" not in text  # not known yet
    row = next(line for line in text.splitlines() if line.startswith("w1"))
    assert row.split()[0:2] == ["w1", "active"]
    assert "42.0%" in row and "33.0%" in row and "7.0%" in row and row.rstrip().endswith("4.0s")
    assert any(line.startswith("w2") and "inactive" in line for line in text.splitlines())
    assert "q quit  h help" in text


def test_render_shows_capacities_when_known_and_wide_enough() -> None:
    state = connected(worker("w1"), worker("w2"))
    apply_totals(state, [capacity("w1"), capacity("w2", cores=64, memory=251.4, gpus=0)], NOW)
    text = text_of(state, 120)
    assert "capacity 72 cores, 267 GiB" in text
    header = next(line for line in text.splitlines() if line.startswith("WORKER"))
    assert "MEM GiB" in header and "WORKER▲" in header  # the sorted column, A to Z
    w1 = next(line for line in text.splitlines() if line.startswith("w1"))
    assert re.search(r"42\.0% of 8 .*33\.0% 5\.3/16 .*7\.0% of 1 ", w1), w1
    w2 = next(line for line in text.splitlines() if line.startswith("w2"))
    assert re.search(r"42\.0% of 64 .*33\.0% 83/251 .*none", w2), w2  # no GPU: none
    assert "GB" not in text.replace("GiB", "")
    # Too narrow for them: the percentages alone, every line within the width.
    narrow = text_of(state, 80)
    assert "of 8" not in narrow and "MEM GiB" not in narrow and "42.0%" in narrow
    assert all(len(line) <= 80 for line in narrow.splitlines())


def test_render_unknown_usage_is_a_dash() -> None:
    state = connected(worker("w1", 0.0, active=False, tasks=0, last_update=None, memory=0.0))
    apply_totals(state, [capacity("w1")], NOW)
    row = next(line for line in text_of(state, 120).splitlines() if line.startswith("w1"))
    assert "0.0%" not in row
    assert row.split() == [
        "w1",
        "inactive",
        "-",
        "of",
        "8",
        "-",
        "of",
        "16",
        "-",
        "of",
        "1",
        "0",
        "-",
    ]


def test_render_fits_narrow_and_wide_terminals() -> None:
    state = connected(worker("w1"))
    for width in (60, 80, 200):
        for view in (TopView(), TopView(help=True)):
            text = text_of(state, width, view=view)
            assert all(len(line) <= width for line in text.splitlines()), text
    assert "42.0%" in text_of(state, 60)


def test_render_connection_states() -> None:
    state = TopState("ws://m/ws/telemetry")
    assert "○ connecting…" in text_of(state) and "waiting for data" in text_of(state)
    state.connected(NOW)
    apply_message(state, {}, True)
    assert "no workers yet" in text_of(state)
    state.disconnected("cannot connect: connection refused", NOW + 2.5)
    assert "✕ disconnected: cannot connect: connection refused; retrying in 2.5 s" in text_of(state)
    narrow = text_of(state, 80)  # the reason on a line of its own, not broken
    assert "\n✕ disconnected: cannot connect: connection refused; retrying in 2.5 s" in narrow
    assert all(len(line) <= 80 for line in narrow.splitlines())


def test_keys_reorder_the_frame_and_show_the_help() -> None:
    state = connected(worker("w1", 10, tasks=0), worker("w2", 90, tasks=2), worker("w3", 50))
    view = TopView()
    assert row_order(text_of(state, view=view)) == ["w1", "w2", "w3"]
    press(view, "c")
    text = text_of(state, view=view)
    assert row_order(text) == ["w2", "w3", "w1"] and "sort: cpu, highest first" in text
    assert "CPU▼" in text
    press(view, "r")
    text = text_of(state, view=view)
    assert row_order(text) == ["w1", "w3", "w2"] and "sort: cpu, lowest first" in text
    assert "CPU▲" in text
    press(view, "t")
    assert row_order(text_of(state, view=view)) == ["w2", "w3", "w1"]
    press(view, "?")
    text = text_of(state, view=view)
    assert "cloudai top: keys" in text and row_order(text) == []  # the help over the list
    for key, what in top.HELP:
        assert re.search(rf"{re.escape(key)}\s+{re.escape(what)}", text), key
    assert "GiB" in text
    press(view, "?")
    assert row_order(text_of(state, view=view)) == ["w2", "w3", "w1"]  # the list is back


def test_one_shot_frame_keeps_long_ids_whole() -> None:
    long_id = "w1-" + "x" * 70
    state = connected(worker(long_id), worker("w2"))
    text = text_of(state, 80, full_ids=True)
    assert long_id in text and "…" not in text
    assert "…" in text_of(state, 80)  # the live view cuts (a screen has a width)


# -- capacities -------------------------------------------------------------------------------


async def test_poll_totals_reads_now_then_every_interval_and_keeps_the_last_good() -> None:
    state = connected(worker("w1"))
    answers: list[Any] = [[capacity("w1")], OSError("refused"), [capacity("w1", cores=16)]]
    calls = 0

    async def fetch() -> Any:
        nonlocal calls
        answer = answers[min(calls, len(answers) - 1)]
        calls += 1
        if isinstance(answer, Exception):
            raise answer
        return answer

    changes = 0

    def changed() -> None:
        nonlocal changes
        changes += 1

    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(
        poll_totals(state, fetch, changed, stop, interval=0.01)
    )
    try:
        await async_wait_until(lambda: calls >= 1, 5, "the first read")
        await async_wait_until(lambda: state.totals, 5, "the first totals")
        await async_wait_until(lambda: calls >= 2, 5, "the failing read")
        assert state.totals["w1"]["total_cpu"] in (8, 16)  # kept through the failure
        await async_wait_until(lambda: state.totals["w1"]["total_cpu"] == 16, 5, "the third")
        assert changes >= 2
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)  # stop ends the wait at once


@pytest.mark.parametrize("error", [OSError("x"), TimeoutError(), ValueError("bad json")])
async def test_fetch_totals_never_raises(error: Exception) -> None:
    state = TopState("ws://m")

    async def fetch() -> Any:
        raise error

    assert not await top.fetch_totals(state, fetch)
    assert state.totals == {}
