from __future__ import annotations

import orjson
import pytest

from cloudai.bench.schedule import (
    MAX_TAG,
    Layout,
    OpenLoopSchedule,
    cpu_to_tag,
    tag_to_cpu,
    worker_ids,
)


def test_open_loop_due_counts_and_times() -> None:
    s = OpenLoopSchedule(rate=1000.0, start=10.0, end=11.0)
    assert s.total == 1000
    assert s.due(9.999) == 0
    assert s.due(10.0) == 1  # event 0 is due at the start
    assert s.due(10.0005) == 1
    assert s.due(10.0015) == 2
    assert s.due(10.5) == 501
    assert s.due(99.0) == 1000  # capped at the total
    assert s.time_of(0) == 10.0
    assert s.time_of(250) == pytest.approx(10.25)


def test_open_loop_does_not_slow_down_when_late() -> None:
    """Open loop: after a stall every missed event is due at once (shows as send lag)."""
    s = OpenLoopSchedule(rate=200.0, start=0.0, end=10.0)
    assert s.due(2.0) - s.due(1.0) == 200
    assert s.due(5.0) == 1001


def test_schedule_rejects_bad_rate() -> None:
    with pytest.raises(ValueError):
        OpenLoopSchedule(rate=0.0, start=0.0, end=1.0)


def test_fractional_rates_total() -> None:
    assert OpenLoopSchedule(rate=2.5, start=0.0, end=1.0).total == 3
    assert OpenLoopSchedule(rate=0.2, start=0.0, end=5.0).total == 1  # one per 5 s


@pytest.mark.parametrize("tag", [0, 1, 2, 12_345, 7_654_321, MAX_TAG])
def test_tags_survive_a_json_round_trip_exactly(tag: int) -> None:
    cpu = tag_to_cpu(tag)
    assert 0.0 <= cpu <= 100.0
    text = orjson.dumps({"cpu_usage": cpu})
    assert cpu_to_tag(orjson.loads(text)["cpu_usage"]) == tag
    assert cpu_to_tag(float(repr(cpu))) == tag


def test_tag_range_is_checked() -> None:
    with pytest.raises(ValueError):
        tag_to_cpu(MAX_TAG + 1)


def test_layout_partitions_workers_and_rates() -> None:
    layout = Layout(workers=10, generators=3)
    owned = [list(layout.owned(g)) for g in range(3)]
    assert owned == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert sum(layout.rate_of(g, 1000.0) for g in range(3)) == pytest.approx(1000.0)
    assert layout.rate_of(0, 1000.0) == pytest.approx(400.0)


def test_layout_tags_are_unique_and_invertible() -> None:
    layout = Layout(workers=7, generators=3)
    seen = set()
    for g in range(3):
        owned = list(layout.owned(g))
        for k in range(50):
            tag = layout.tag(g, k)
            assert tag >= 1 and tag not in seen
            seen.add(tag)
            assert layout.split(tag) == (g, k)
            assert layout.worker_of(tag) == owned[k % len(owned)]
            following = layout.next_tag(tag)
            assert layout.worker_of(following) == layout.worker_of(tag)
            assert layout.split(following) == (g, k + len(owned))


def test_capacity_holds_every_tag_of_a_run() -> None:
    layout = Layout(workers=5, generators=2)
    capacity = layout.capacity(total_rate=1000.0, duration=2.0)
    for g in range(2):
        total = OpenLoopSchedule(layout.rate_of(g, 1000.0), 0.0, 2.0).total
        assert layout.tag(g, total - 1) < capacity


def test_layout_validation() -> None:
    with pytest.raises(ValueError):
        Layout(workers=2, generators=3)
    with pytest.raises(ValueError):
        Layout(workers=0, generators=1)


def test_worker_ids_are_sortable_and_valid() -> None:
    ids = worker_ids(12)
    assert ids[0] == "bench-00000" and ids[11] == "bench-00011"
    assert ids == sorted(ids)
    assert worker_ids(123_456, "x-")[-1] == "x-123455"
