"""tuned_process: the master's process tuning, applied and undone. A fake collector
stands for the ``gc`` module; the switch interval is the interpreter's own, put back by
every test."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator

import pytest

from cloudai.master.gc_pacer import GcPacer
from cloudai.master.tuning import tuned_process


class FakeCollector:
    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
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


ORIGINAL = 0.004  # a switch interval no test asks for, so a restore is visible


@pytest.fixture(autouse=True)
def switch_interval() -> Iterator[None]:
    saved = sys.getswitchinterval()
    sys.setswitchinterval(ORIGINAL)
    try:
        yield
    finally:
        sys.setswitchinterval(saved)


def tuning(**overrides: float) -> dict[str, float]:
    settings = {
        "gil_switch_interval": 0.0005,
        "gc_young_interval": 0.05,
        "gc_full_interval": 300.0,
        "gc_refresh_interval": 3600.0,
    }
    settings.update(overrides)
    return settings


async def test_applies_the_tuning_and_restores_the_interpreter() -> None:
    collector = FakeCollector()
    async with tuned_process(**tuning(), collector=collector) as pacer:
        assert sys.getswitchinterval() == pytest.approx(0.0005)
        assert isinstance(pacer, GcPacer) and pacer.running
        assert pacer.young_interval == 0.05
        assert not collector.enabled
        assert collector.calls == ["collect2", "freeze"]  # start-up objects frozen
    assert sys.getswitchinterval() == pytest.approx(ORIGINAL)
    assert not pacer.running
    assert collector.enabled and collector.calls[-1] == "unfreeze"


async def test_zero_leaves_each_setting_alone() -> None:
    collector = FakeCollector()
    async with tuned_process(
        **tuning(gil_switch_interval=0.0, gc_young_interval=0.0), collector=collector
    ) as pacer:
        assert pacer is None
        assert sys.getswitchinterval() == pytest.approx(ORIGINAL)
        assert collector.enabled and collector.calls == []
    assert sys.getswitchinterval() == pytest.approx(ORIGINAL)
    assert collector.enabled and collector.calls == []


async def test_only_the_switch_interval_or_only_the_pacer() -> None:
    collector = FakeCollector()
    async with tuned_process(**tuning(gc_young_interval=0.0), collector=collector) as pacer:
        assert pacer is None and collector.calls == []
        assert sys.getswitchinterval() == pytest.approx(0.0005)
    assert sys.getswitchinterval() == pytest.approx(ORIGINAL)
    async with tuned_process(**tuning(gil_switch_interval=-1.0), collector=collector) as pacer:
        assert pacer is not None and not collector.enabled
        assert sys.getswitchinterval() == pytest.approx(ORIGINAL)
    assert collector.enabled


async def test_restores_everything_when_the_body_fails() -> None:
    collector = FakeCollector()
    with pytest.raises(RuntimeError, match="boom"):
        async with tuned_process(**tuning(), collector=collector) as pacer:
            assert pacer is not None and not collector.enabled
            raise RuntimeError("boom")
    assert sys.getswitchinterval() == pytest.approx(ORIGINAL)
    assert not pacer.running
    assert collector.enabled and collector.calls[-1] == "unfreeze"


async def test_restores_everything_when_the_body_is_cancelled() -> None:
    collector = FakeCollector()
    entered = asyncio.Event()

    async def body() -> None:
        async with tuned_process(**tuning(), collector=collector):
            entered.set()
            await asyncio.Event().wait()  # until cancelled

    task = asyncio.create_task(body())
    await asyncio.wait_for(entered.wait(), 10)
    assert sys.getswitchinterval() == pytest.approx(0.0005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sys.getswitchinterval() == pytest.approx(ORIGINAL)
    assert collector.enabled and collector.calls[-1] == "unfreeze"


async def test_a_disabled_collector_stays_disabled() -> None:
    collector = FakeCollector(enabled=False)
    async with tuned_process(**tuning(), collector=collector) as pacer:
        assert pacer is not None
    assert not collector.enabled


async def test_bad_gc_intervals_fail_on_entry_and_change_nothing() -> None:
    collector = FakeCollector()
    with pytest.raises(ValueError):
        async with tuned_process(
            **tuning(gc_full_interval=600.0, gc_refresh_interval=60.0), collector=collector
        ):
            pytest.fail("entered with invalid GC intervals")
    assert sys.getswitchinterval() == pytest.approx(ORIGINAL)
    assert collector.enabled and collector.calls == []


async def test_the_pacer_runs_on_the_loop_inside() -> None:
    collector = FakeCollector()
    async with tuned_process(**tuning(gc_young_interval=0.001), collector=collector):
        deadline = asyncio.get_running_loop().time() + 10
        while "collect0" not in collector.calls:  # a young collection, from the pacer's task
            assert asyncio.get_running_loop().time() < deadline, "the pacer never ticked"
            await asyncio.sleep(0.005)
    assert collector.enabled
