"""MasterClient against fake masters on loopback: registration, heartbeats (stream and
unary), back-off and resumption, re-registration, result delivery."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from cloudai.proto import pb
from cloudai.worker.client import MasterClient
from cloudai.worker.results_spool import ResultSpool
from cloudai.worker.settings import WorkerSettings


def fast_settings(**kwargs: Any) -> WorkerSettings:
    values: dict[str, Any] = {
        "worker_id": "w1",
        "insecure": True,
        "heartbeat_interval": 0.05,
        "backoff_initial": 0.02,
        "heartbeat_backoff_max": 0.2,
        "register_backoff_max": 0.2,
        "rpc_timeout": 2.0,
    }
    values.update(kwargs)
    return WorkerSettings(**values)


def make_client(tmp_path: Path, **kwargs: Any) -> MasterClient:
    async def heartbeat() -> pb.Heartbeat:
        return pb.Heartbeat(worker_id="w1", cpu_usage=12.5, memory_usage=40.0)

    def info(master_address: str) -> pb.WorkerInfo:
        return pb.WorkerInfo(worker_id="w1", worker_ip="127.0.0.1:50052", total_cpu=2)

    return MasterClient(fast_settings(**kwargs), info, heartbeat, ResultSpool(tmp_path / "r"))


@pytest.fixture
async def client(tmp_path: Path) -> Any:
    client = make_client(tmp_path)
    client.start()
    yield client
    await client.close()


def result(task_id: str) -> pb.TaskResult:
    return pb.TaskResult(task_id=task_id, worker_id="w1", status="success", logs="ok\n")


async def test_registers_and_streams_heartbeats_on_one_channel(
    client: MasterClient, masters: Any, fake_master_class: Any, eventually: Any
) -> None:
    master = fake_master_class()
    client.set_master(await masters.start(master))
    await eventually(lambda: master.stream_heartbeats >= 3, what="streamed heartbeats")
    assert [r.worker_id for r in master.registrations] == ["w1"]
    assert master.registrations[0].worker_ip == "127.0.0.1:50052"
    assert master.unary_heartbeats == 0
    assert master.streams_opened == 1 and client.stats.streams_opened == 1
    assert client.stream_supported is not False
    assert master.heartbeats[0].cpu_usage == 12.5


async def test_falls_back_to_unary_heartbeats_and_remembers(
    client: MasterClient, masters: Any, fake_master_class: Any, eventually: Any
) -> None:
    master = fake_master_class(stream=False)  # like the existing Go master
    client.set_master(await masters.start(master))
    await eventually(lambda: master.unary_heartbeats >= 3, what="unary heartbeats")
    assert client.stream_supported is False
    assert client.stats.unary_fallbacks == 1 and client.stats.streams_opened == 1


@pytest.mark.parametrize("stream", [True, False])
async def test_reregisters_when_the_master_forgets_the_session(
    client: MasterClient, masters: Any, fake_master_class: Any, eventually: Any, stream: bool
) -> None:
    master = fake_master_class(stream=stream)
    client.set_master(await masters.start(master))
    await eventually(lambda: len(master.heartbeats) >= 2)
    master.forget()
    await eventually(lambda: len(master.registrations) == 2, what="a second registration")
    before = len(master.heartbeats)
    await eventually(lambda: len(master.heartbeats) >= before + 2, what="heartbeats again")
    assert master.not_found >= 1 and client.stats.reregistrations >= 1


async def test_refused_registration_is_logged_once_and_retried(
    client: MasterClient,
    masters: Any,
    fake_master_class: Any,
    eventually: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    master = fake_master_class(authorised=False)
    with caplog.at_level(logging.WARNING, logger="cloudai.worker.client"):
        client.set_master(await masters.start(master))
        await eventually(lambda: master.refusals >= 4, what="repeated registration attempts")
    refusals = [r for r in caplog.records if "refused the registration" in r.getMessage()]
    assert len(refusals) == 1
    assert "register w1 127.0.0.1:50052" in refusals[0].getMessage()
    assert not client.registered
    master.authorised = True  # the admin authorises it: no restart needed
    await eventually(lambda: master.heartbeats, what="heartbeats after authorisation")


async def test_master_down_then_up_then_restarted(
    client: MasterClient, masters: Any, fake_master_class: Any, eventually: Any, free_port: int
) -> None:
    # The master is not there yet: registration retries with back-off.
    client.set_master(f"127.0.0.1:{free_port}")
    await eventually(lambda: not client.registered)
    first = fake_master_class()
    await masters.start(first, free_port)
    await eventually(lambda: len(first.heartbeats) >= 2, what="heartbeats to the new master")
    # The master goes away: heartbeats fail and back off.
    await masters.stop(first)
    failures = client.stats.heartbeat_failures
    await eventually(lambda: client.stats.heartbeat_failures >= failures + 2, what="failures")
    # A restarted master (no sessions) on the same address: resumes without help.
    second = fake_master_class()
    await masters.start(second, free_port)
    await eventually(lambda: len(second.heartbeats) >= 2, what="heartbeats after the restart")
    assert [r.worker_id for r in second.registrations] == ["w1"]


async def test_stop_heartbeats_closes_the_stream_cleanly(
    client: MasterClient, masters: Any, fake_master_class: Any, eventually: Any
) -> None:
    master = fake_master_class()
    client.set_master(await masters.start(master))
    await eventually(lambda: master.stream_heartbeats >= 1)
    await client.stop_heartbeats()
    await eventually(lambda: master.streams_ended_cleanly == 1, what="a clean end of stream")
    assert client.registered  # the session stays: results can still be delivered


async def test_results_are_delivered_and_removed_after_the_ack(
    client: MasterClient, masters: Any, fake_master_class: Any, eventually: Any, tmp_path: Path
) -> None:
    spool = ResultSpool(tmp_path / "r")
    spool.put(result("early"))  # finished before any master was known
    master = fake_master_class()
    client.set_master(await masters.start(master))
    await eventually(lambda: master.result("early"), what="the early result")
    spool.put(result("t2"))
    client.notify_result()
    await eventually(lambda: master.result("t2"), what="the second result")
    # The count goes up once the spooled copy is removed (in a thread): wait on the
    # count, then the spool must already be empty.
    await eventually(lambda: client.stats.results_delivered == 2, what="both acks")
    assert len(spool) == 0


async def test_a_refused_result_is_set_aside_not_retried(
    client: MasterClient, masters: Any, fake_master_class: Any, eventually: Any, tmp_path: Path
) -> None:
    """The master answered and said no (a task it did not give this worker): retrying
    cannot change that, so the result moves to results/rejected and stays there."""
    spool = ResultSpool(tmp_path / "r")
    master = fake_master_class()
    master.result_ack = False
    client.set_master(await masters.start(master))
    await eventually(lambda: client.registered)
    spool.put(result("t1"))
    client.notify_result()
    await eventually(lambda: not spool.contains("t1"), what="the refused result set aside")
    assert (spool.rejected_dir / "t1.result").exists()
    assert client.stats.result_failures == 1
    master.result_ack = True
    client.notify_result()
    assert await client.flush_results(0.5) == 0  # nothing left to deliver
    assert client.stats.result_failures == 1  # and it was not sent again


async def test_results_survive_an_unreachable_master_and_a_restart(
    masters: Any, fake_master_class: Any, eventually: Any, tmp_path: Path, free_port: int
) -> None:
    spool_dir = tmp_path / "r"
    first = make_client(tmp_path)
    first.start()
    first.set_master(f"127.0.0.1:{free_port}")  # nobody there
    ResultSpool(spool_dir).put(result("t1"))
    first.notify_result()
    assert await first.flush_results(0.2) == 1  # not registered: nothing to do but keep it
    await first.close()
    assert ResultSpool(spool_dir).contains("t1")

    master = fake_master_class()
    await masters.start(master, free_port)
    second = make_client(tmp_path)  # a restarted worker on the same work directory
    second.start()
    second.set_master(master.address)
    try:
        await eventually(lambda: master.result("t1"), what="the result after the restart")
        assert await second.flush_results(5.0) == 0
    finally:
        await second.close()
    assert len(ResultSpool(spool_dir)) == 0


async def test_a_new_master_address_gets_a_new_registration(
    client: MasterClient, masters: Any, fake_master_class: Any, eventually: Any
) -> None:
    one, two = fake_master_class(), fake_master_class(stream=False)
    client.set_master(await masters.start(one))
    await eventually(lambda: one.heartbeats)
    client.set_master(await masters.start(two))
    await eventually(lambda: len(two.heartbeats) >= 2)
    count = len(one.heartbeats)
    await eventually(lambda: len(two.heartbeats) >= 4)
    assert len(one.heartbeats) == count  # one channel, to the current master only
