"""WorkerLink's MasterRegister calls: the admin's re-announcement and the start-up
recovery, on a real registry. Only the gRPC call itself is scripted (no sockets), and the
back-off's sleep is a recorded step, not a wait."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from cloudai.master.registry import WorkerRegistry
from cloudai.master.worker_link import MAX_UNREGISTERED_ANSWERS, WorkerLink, WorkerUnavailable
from cloudai.proto import pb


class ScriptedLink(WorkerLink):
    """A WorkerLink whose MasterRegister call answers from ``answers`` (per worker, in
    order; the last one repeats), with ``gate`` to hold calls in flight. A worker that
    answers registers at once, as a real one does, unless it is in ``silent``."""

    def __init__(self, registry: WorkerRegistry, max_concurrent_calls: int = 32) -> None:
        super().__init__(
            registry,
            master_id="m",
            grpc_port=50051,
            advertise_host="127.0.0.1",
            max_message_bytes=1 << 20,
            max_concurrent_calls=max_concurrent_calls,
            backoff=(0.5, 4.0),
            register_wait=1.0,
            sleep=self._fake_sleep,
        )
        self.calls: list[str] = []
        self.silent: set[str] = set()
        self.answers: dict[str, list[bool]] = {}
        self.delays: list[float] = []
        self.on_sleep: Callable[[], None] = lambda: None
        self.gate: asyncio.Event | None = None
        self.in_flight = 0
        self.most_in_flight = 0
        self.changed = asyncio.Condition()  # notified when a call starts

    async def until(self, predicate: Callable[[], bool]) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(predicate), 5)

    async def _fake_sleep(self, delay: float) -> None:
        self.delays.append(delay)
        self.on_sleep()
        await asyncio.sleep(0)  # a step of the loop, no time

    async def master_register(self, worker_id: str) -> tuple[bool, str]:
        self._address(worker_id)  # raises WorkerUnavailable as the real call does
        self.calls.append(worker_id)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        async with self.changed:
            self.changed.notify_all()
        try:
            if self.gate is not None:
                await self.gate.wait()
        finally:
            self.in_flight -= 1
        script = self.answers.get(worker_id, [True])
        ok = script.pop(0) if len(script) > 1 else script[0]
        if ok and worker_id not in self.silent:
            registered(self._registry, worker_id)
        return ok, "ok" if ok else "UNAVAILABLE: connection refused"

    async def settle(self) -> None:
        """Wait for every registration task of this link to end."""
        await asyncio.gather(*self._registering.values(), return_exceptions=True)


def registered(registry: WorkerRegistry, worker_id: str) -> None:
    ok, message = registry.register(pb.WorkerInfo(worker_id=worker_id))
    assert ok, message


@pytest.fixture
def registry() -> WorkerRegistry:
    return WorkerRegistry()


async def test_register_reannounces_to_a_worker_that_holds_a_session(
    registry: WorkerRegistry,
) -> None:
    link = ScriptedLink(registry)
    registry.authorise("w1", "127.0.0.1:50052")
    registered(registry, "w1")
    link.connect("w1")
    await link.settle()
    assert link.calls == ["w1"]  # the old session did not stop the call
    link.connect("w1")
    await link.settle()
    assert link.calls == ["w1", "w1"]  # and every register calls again
    await link.close()


async def test_retries_with_backoff_until_the_worker_answers(registry: WorkerRegistry) -> None:
    link = ScriptedLink(registry)
    registry.authorise("w1", "127.0.0.1:50052")
    link.answers["w1"] = [False, False, False, True]
    link.connect("w1")
    await link.settle()
    assert link.calls == ["w1"] * 4
    assert len(link.delays) == 4  # three retries, then the wait for its registration
    assert all(0.0 < d <= 4.0 for d in link.delays[:3])
    await link.close()


async def test_stops_when_the_worker_registers_anew_not_on_its_old_session(
    registry: WorkerRegistry,
) -> None:
    link = ScriptedLink(registry)
    registry.authorise("w1", "127.0.0.1:50052")
    registered(registry, "w1")  # the session before the announcement
    link.answers["w1"] = [False]
    sleeps = 0

    def worker_comes_back() -> None:
        nonlocal sleeps
        sleeps += 1
        if sleeps == 3:  # the worker registers by itself, meanwhile
            registered(registry, "w1")

    link.on_sleep = worker_comes_back
    link.connect("w1")
    await link.settle()
    assert link.calls == ["w1"] * 3  # the old session did not end the retries; the new one did
    await link.close()


async def test_an_answer_without_a_registration_is_called_again(
    registry: WorkerRegistry,
) -> None:
    """The Go worker tries RegisterWorker once after MasterRegister: when that one fails,
    only another MasterRegister brings it back."""
    link = ScriptedLink(registry)
    registry.authorise("w1", "127.0.0.1:50052")
    link.silent.add("w1")
    sleeps = 0

    def registers_on_the_second_call() -> None:
        nonlocal sleeps
        sleeps += 1
        if sleeps == 1:
            link.silent.clear()

    link.on_sleep = registers_on_the_second_call
    link.connect("w1")
    await link.settle()
    assert link.calls == ["w1", "w1"]
    assert link.delays[0] >= 1.0  # the register wait, not a retry's back-off
    assert registry.has_session("w1")
    await link.close()


async def test_a_worker_that_answers_but_never_registers_is_left_alone(
    registry: WorkerRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    link = ScriptedLink(registry)
    registry.authorise("w1", "127.0.0.1:50052")
    link.silent.add("w1")
    link.connect("w1")
    await link.settle()
    assert link.calls == ["w1"] * MAX_UNREGISTERED_ANSWERS
    assert "did not register" in caplog.text
    await link.close()


async def test_stops_when_the_worker_is_removed(registry: WorkerRegistry) -> None:
    link = ScriptedLink(registry)
    registry.authorise("w1", "127.0.0.1:50052")
    link.answers["w1"] = [False]
    link.on_sleep = lambda: registry.revoke("w1") and None
    link.connect("w1")
    await link.settle()
    assert link.calls == ["w1"]
    await link.close()


async def test_rejoin_calls_every_stored_worker_with_an_address_bounded(
    registry: WorkerRegistry,
) -> None:
    for i in range(10):
        registry.authorise(f"w{i}", f"127.0.0.1:{6000 + i}")
    registry.authorise("self-registering")  # no address: it will find the master itself
    link = ScriptedLink(registry, max_concurrent_calls=4)
    link.gate = asyncio.Event()
    round_ = link.rejoin(registry.with_address())
    assert round_.total == 10
    await link.until(lambda: link.in_flight == 4)
    for _ in range(5):  # more steps: no fifth call starts while four are in flight
        await asyncio.sleep(0)
    assert link.in_flight == 4
    link.gate.set()
    await asyncio.wait_for(round_.done.wait(), 5)
    assert sorted(link.calls) == sorted(f"w{i}" for i in range(10))
    assert link.most_in_flight == 4
    assert dict(round_.outcomes) == {"answered": 10}
    assert "10 stored workers called back: 10 answered" in round_.describe()
    await link.close()


async def test_rejoin_leaves_workers_that_are_back_or_being_called(
    registry: WorkerRegistry,
) -> None:
    for worker_id in ("back", "called", "quiet"):
        registry.authorise(worker_id, "127.0.0.1:6000")
    registered(registry, "back")
    link = ScriptedLink(registry)
    link.gate = asyncio.Event()
    link.connect("called")  # the admin's register, under way
    round_ = link.rejoin(registry.with_address())
    assert round_.total == 1
    link.gate.set()
    await asyncio.wait_for(round_.done.wait(), 5)
    await link.settle()
    assert sorted(link.calls) == ["called", "quiet"]
    await link.close()


async def test_rejoin_counts_unreachable_workers_once_and_keeps_calling(
    registry: WorkerRegistry,
) -> None:
    registry.authorise("up", "127.0.0.1:6000")
    registry.authorise("down", "127.0.0.1:6001")
    registry.authorise("self", "127.0.0.1:6002")
    link = ScriptedLink(registry)
    link.answers["down"] = [False, False, True]
    registered(registry, "self")  # came back before the stage ran
    round_ = link.rejoin(["up", "down", "self"])
    await asyncio.wait_for(round_.done.wait(), 5)
    assert dict(round_.outcomes) == {"answered": 1, "retrying": 1}
    await link.settle()
    assert link.calls.count("down") == 3  # the retries went on after the round's count
    await link.close()


async def test_a_worker_that_registers_by_itself_first_is_not_called(
    registry: WorkerRegistry,
) -> None:
    registry.authorise("w1", "127.0.0.1:6000")
    link = ScriptedLink(registry)
    round_ = link.rejoin(["w1"])
    registered(registry, "w1")  # before its task ran
    await asyncio.wait_for(round_.done.wait(), 5)
    assert link.calls == [] and dict(round_.outcomes) == {"registered": 1}
    await link.close()


async def test_close_cancels_the_retries_and_ends_the_round(registry: WorkerRegistry) -> None:
    registry.authorise("w1", "127.0.0.1:6000")
    link = ScriptedLink(registry)
    link.gate = asyncio.Event()
    round_ = link.rejoin(["w1"])
    await link.until(lambda: bool(link.calls))
    await link.close()
    assert round_.done.is_set() and dict(round_.outcomes) == {"cancelled": 1}
    assert link.rejoin(["w1"]).total == 0  # closed: nothing more is called
    link.connect("w1")
    assert link.calls == ["w1"]


async def test_a_worker_without_an_address_is_not_callable(registry: WorkerRegistry) -> None:
    registry.authorise("w1")
    link = ScriptedLink(registry)
    round_ = link.rejoin(["w1"])
    await asyncio.wait_for(round_.done.wait(), 5)
    assert link.calls == [] and dict(round_.outcomes) == {"not callable": 1}
    with pytest.raises(WorkerUnavailable):
        await link.master_register("w1")
    await link.close()
