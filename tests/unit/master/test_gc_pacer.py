from __future__ import annotations

import asyncio
import gc

import pytest

from cloudai.master.gc_pacer import Collection, GcPacer, GcSchedule


class FakeCollector:
    def __init__(self) -> None:
        self.enabled = True
        self.calls: list[str] = []

    def collect(self, generation: int = 2) -> int:
        self.calls.append(f"collect{generation}")
        return 0

    def freeze(self) -> None:
        self.calls.append("freeze")

    def unfreeze(self) -> None:
        self.calls.append("unfreeze")

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    def isenabled(self) -> bool:
        return self.enabled


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_schedule_young_full_refresh() -> None:
    schedule = GcSchedule(full_interval=30.0, refresh_interval=90.0, started=0.0)
    kinds = {schedule.next_collection(0.1 * i) for i in range(1, 200)}
    assert kinds == {Collection.YOUNG}
    assert schedule.next_collection(30.0) is Collection.FULL
    assert schedule.next_collection(30.1) is Collection.YOUNG  # one per interval
    assert schedule.next_collection(60.0) is Collection.FULL
    assert schedule.next_collection(90.0) is Collection.REFRESH  # a refresh is also a full
    assert schedule.next_collection(110.0) is Collection.YOUNG
    assert schedule.next_collection(120.0) is Collection.FULL


@pytest.mark.parametrize(("full", "refresh"), [(0.0, 10.0), (20.0, 10.0), (-1.0, 5.0)])
def test_schedule_refuses_bad_intervals(full: float, refresh: float) -> None:
    with pytest.raises(ValueError):
        GcSchedule(full_interval=full, refresh_interval=refresh, started=0.0)


def test_pacer_drives_the_collector_and_restores_it() -> None:
    collector, clock = FakeCollector(), Clock()
    pacer = GcPacer(0.1, 30.0, 900.0, collector=collector, clock=clock)
    pacer.start()  # no running loop: the test ticks by hand
    assert not collector.enabled and pacer.running
    assert collector.calls == ["collect2", "freeze"]  # start-up objects frozen
    collector.calls.clear()

    assert pacer.tick() is Collection.YOUNG
    clock.now += 30.0
    assert pacer.tick() is Collection.FULL
    clock.now += 900.0
    assert pacer.tick() is Collection.REFRESH
    assert collector.calls == [
        "collect0",
        "collect2",
        "freeze",
        "unfreeze",
        "collect2",
        "freeze",
    ]
    assert pacer.stats[Collection.FULL].count == 1 and pacer.stats[Collection.REFRESH].count == 1

    asyncio.run(pacer.stop())
    assert collector.enabled and not pacer.running
    assert collector.calls[-1] == "unfreeze"


def test_pacer_leaves_a_disabled_collector_disabled() -> None:
    collector = FakeCollector()
    collector.enabled = False
    pacer = GcPacer(collector=collector, clock=Clock())
    pacer.start()
    with pytest.raises(RuntimeError):
        pacer.start()
    asyncio.run(pacer.stop())
    assert not collector.enabled


async def test_pacer_ticks_on_the_loop_with_the_real_collector() -> None:
    was_enabled = gc.isenabled()
    pacer = GcPacer(young_interval=0.001)
    pacer.start()
    try:
        assert not gc.isenabled() and gc.get_freeze_count() > 0
        deadline = asyncio.get_running_loop().time() + 10
        while pacer.stats[Collection.YOUNG].count < 10:
            assert asyncio.get_running_loop().time() < deadline, "the pacer never ticked"
            await asyncio.sleep(0.005)
    finally:
        await pacer.stop()
    assert gc.isenabled() == was_enabled and gc.get_freeze_count() == 0
