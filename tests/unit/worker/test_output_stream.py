"""The worker's live output: the chunker (pure) and OutputStreams against a fake master
(no sockets): what is sent, when, and what happens on gaps, errors and refusals."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from cloudai.proto import pb
from cloudai.worker.output_stream import (
    MAX_CHUNK,
    SEND_INTERVAL,
    SEND_THRESHOLD,
    Chunk,
    OutputStreams,
    next_chunk,
    send_delay,
)
from cloudai.worker.runtimes.base import TaskSpec
from cloudai.worker.runtimes.logs import BoundedLog

SPEC = TaskSpec("t1", attempt=1)


def test_next_chunk() -> None:
    assert next_chunk(0, 0, 0, ended=False) is None
    assert next_chunk(0, 10, 10, ended=False) == Chunk(0, 10, False)
    assert next_chunk(4, 10, 10, ended=True) == Chunk(4, 6, True)
    assert next_chunk(0, 3 * MAX_CHUNK, 3 * MAX_CHUNK, ended=True) == Chunk(0, MAX_CHUNK, False)
    assert next_chunk(10, 10, 10, ended=True) == Chunk(10, 0, True)  # an empty last chunk
    # Past the worker's cap: the last chunk says how long the output was.
    assert next_chunk(10, 10, 25, ended=True) == Chunk(25, 0, True)
    assert next_chunk(10, 10, 25, ended=False) is None


def test_send_delay() -> None:
    assert send_delay(10, since_last=0.0, ended=False) == SEND_INTERVAL
    assert send_delay(10, since_last=SEND_INTERVAL, ended=False) == 0.0
    assert send_delay(SEND_THRESHOLD, since_last=0.0, ended=False) == 0.0
    assert send_delay(1, since_last=0.0, ended=True) == 0.0


class FakeMaster:
    """AppendTaskOutput with the master's rules, and faults on demand."""

    def __init__(self) -> None:
        self.held = bytearray()
        self.final = False
        self.calls: list[pb.TaskOutput] = []
        self.errors: list[BaseException] = []  # raised by the next calls, in order
        self.answers: list[pb.TaskOutputAck] = []  # answered by the next calls, in order
        self.changed = asyncio.Event()

    async def send(self, message: pb.TaskOutput) -> pb.TaskOutputAck:
        self.calls.append(message)
        self.changed.set()
        if self.errors:
            raise self.errors.pop(0)
        if self.answers:
            return self.answers.pop(0)
        if message.offset > len(self.held):
            return pb.TaskOutputAck(success=False, next_offset=len(self.held))
        new = message.data[len(self.held) - message.offset :]
        self.held += new
        self.final = self.final or message.final
        return pb.TaskOutputAck(success=True, next_offset=len(self.held))


class RpcError(grpc.aio.AioRpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="test")


async def until(predicate, master: FakeMaster, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    async def wait() -> None:
        while not predicate():
            master.changed.clear()
            await master.changed.wait()

    await asyncio.wait_for(wait(), timeout)


def run_log(task_dir: Path) -> BoundedLog:
    """What a runtime opens: the tap set by ``begin`` comes with it."""
    return BoundedLog(task_dir / "output.log", 1024 * 1024)


@pytest.fixture
def task_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "tasks" / "t1"
    folder.mkdir(parents=True)
    return folder


async def test_output_reaches_the_master_while_the_task_runs(task_dir: Path) -> None:
    master = FakeMaster()
    streams = OutputStreams("w1", master.send)
    streams.begin(SPEC, task_dir)
    output = run_log(task_dir)
    output.write(b"line 1\n")
    await until(lambda: bytes(master.held) == b"line 1\n", master)
    output.write(b"line 2\n")
    await until(lambda: bytes(master.held) == b"line 1\nline 2\n", master)
    assert not master.final
    output.close()
    streams.end(SPEC)
    await streams.flush("t1", 1, 5)
    assert master.final and bytes(master.held) == b"line 1\nline 2\n"
    assert all(c.attempt == 1 and c.worker_id == "w1" for c in master.calls)
    assert not (task_dir / "output-1.stream").exists()  # delivered: deleted
    assert (task_dir / "output.log").read_bytes() == b"line 1\nline 2\n"  # the tail, as before
    await streams.close()


async def test_a_large_output_goes_in_chunks_of_at_most_1_mib(task_dir: Path) -> None:
    master = FakeMaster()
    streams = OutputStreams("w1", master.send)
    streams.begin(SPEC, task_dir)
    output = run_log(task_dir)
    data = bytes(range(256)) * (12 * 1024)  # 3 MiB
    for start in range(0, len(data), 65536):
        output.write(data[start : start + 65536])
    output.close()
    streams.end(SPEC)
    await streams.flush("t1", 1, 10)
    assert bytes(master.held) == data and master.final
    assert max(len(c.data) for c in master.calls) <= MAX_CHUNK
    await streams.close()


async def test_an_unreachable_master_loses_nothing(task_dir: Path) -> None:
    master = FakeMaster()
    master.errors = [RpcError(grpc.StatusCode.UNAVAILABLE)] * 3 + [ConnectionError("no master")]
    streams = OutputStreams("w1", master.send)
    streams.begin(SPEC, task_dir)
    output = run_log(task_dir)
    output.write(b"kept on disk\n")
    output.write(b"until the master is back\n")
    output.close()
    streams.end(SPEC)
    await until(lambda: master.final, master, timeout=15)
    assert bytes(master.held) == b"kept on disk\nuntil the master is back\n"
    await streams.close()


async def test_a_gap_makes_the_worker_send_again_from_what_the_master_holds(
    task_dir: Path,
) -> None:
    master = FakeMaster()
    master.held += b"abc"  # say the master holds 3 bytes only (it lost the rest)
    master.answers = [pb.TaskOutputAck(success=True, next_offset=3)]  # first answer: 3
    streams = OutputStreams("w1", master.send)
    streams.begin(SPEC, task_dir)
    output = run_log(task_dir)
    output.write(b"abcdef")
    output.close()
    streams.end(SPEC)
    await until(lambda: master.final, master)
    assert bytes(master.held) == b"abcdef"
    await streams.close()


def refusing(refusal: object) -> FakeMaster:
    """A master whose first answer is ``refusal``: an RPC error or a refusing ack."""
    master = FakeMaster()
    if isinstance(refusal, BaseException):
        master.errors = [refusal]
    else:
        assert isinstance(refusal, pb.TaskOutputAck)
        master.answers = [refusal]
    return master


@pytest.mark.parametrize(
    "refusal",
    [
        RpcError(grpc.StatusCode.UNIMPLEMENTED),  # a Go master
        pb.TaskOutputAck(success=False, message="not yours", next_offset=0),
    ],
)
async def test_a_master_that_does_not_take_it_gets_nothing_more(
    task_dir: Path, refusal: object
) -> None:
    master = refusing(refusal)
    streams = OutputStreams("w1", master.send)
    streams.begin(SPEC, task_dir)
    output = run_log(task_dir)
    output.write(b"x")
    await streams.flush("t1", 1, 5)
    output.write(b"more")
    output.close()
    streams.end(SPEC)
    assert len(master.calls) == 1
    assert not (task_dir / "output-1.stream").exists()
    await streams.close()


async def test_past_the_workers_cap_the_last_chunk_says_how_long_it_was(
    task_dir: Path,
) -> None:
    master = FakeMaster()
    streams = OutputStreams("w1", master.send, max_bytes=4)
    streams.begin(SPEC, task_dir)
    output = run_log(task_dir)
    output.write(b"0123456789")
    output.close()
    streams.end(SPEC)
    await until(lambda: any(c.final for c in master.calls), master)
    last = master.calls[-1]
    assert bytes(master.held) == b"0123" and (last.offset, last.data, last.final) == (10, b"", True)
    await streams.close()


# -- resumed after a worker restart -----------------------------------------------------------


def left_behind(task_dir: Path, data: bytes, attempt: int = 1) -> Path:
    """The file an earlier process of the worker left."""
    path = task_dir / f"output-{attempt}.stream"
    path.write_bytes(data)
    return path


async def test_a_resumed_run_asks_the_master_then_sends_the_rest_marked_final(
    task_dir: Path,
) -> None:
    master = FakeMaster()
    master.held += b"abc"  # acknowledged before the worker died
    path = left_behind(task_dir, b"abcdef")
    streams = OutputStreams("w1", master.send)
    assert streams.resume("t1", 1, task_dir)
    await streams.flush("t1", 1, 5)
    assert bytes(master.held) == b"abcdef" and master.final
    probe, rest = master.calls
    assert (probe.offset, probe.data, probe.final) == (0, b"", False)
    assert (rest.offset, rest.data, rest.final, rest.attempt) == (3, b"def", True, 1)
    assert not path.exists()
    await streams.close()


async def test_a_resumed_run_the_master_holds_whole_ends_with_an_empty_final_chunk(
    task_dir: Path,
) -> None:
    master = FakeMaster()
    master.held += b"abcdef"
    path = left_behind(task_dir, b"abcdef")
    streams = OutputStreams("w1", master.send)
    assert streams.resume("t1", 1, task_dir)
    await streams.flush("t1", 1, 5)
    assert [(c.offset, c.data, c.final) for c in master.calls] == [
        (0, b"", False),
        (6, b"", True),
    ]
    assert master.final and not path.exists()
    await streams.close()


async def test_a_resumed_run_waits_for_an_unreachable_master(task_dir: Path) -> None:
    master = FakeMaster()
    master.errors = [ConnectionError("not registered yet"), RpcError(grpc.StatusCode.UNAVAILABLE)]
    path = left_behind(task_dir, b"kept\n" * 1000)
    streams = OutputStreams("w1", master.send, max_bytes=0)  # off now: on when it ran
    assert streams.resume("t1", 1, task_dir)
    await until(lambda: master.final, master, timeout=15)
    assert bytes(master.held) == b"kept\n" * 1000 and not path.exists()
    await streams.close()


@pytest.mark.parametrize(
    "refusal",
    [
        RpcError(grpc.StatusCode.UNIMPLEMENTED),  # a Go master
        pb.TaskOutputAck(success=False, message="never assigned", next_offset=0),
    ],
)
async def test_a_resumed_run_the_master_does_not_want_is_deleted(
    task_dir: Path, refusal: object
) -> None:
    master = refusing(refusal)
    path = left_behind(task_dir, b"abc")
    streams = OutputStreams("w1", master.send)
    assert streams.resume("t1", 1, task_dir)
    await streams.flush("t1", 1, 5)
    assert len(master.calls) == 1 and not path.exists()
    await streams.close()


async def test_a_resumed_run_is_kept_on_disk_when_the_worker_stops_first(task_dir: Path) -> None:
    master = FakeMaster()
    master.errors = [ConnectionError("not registered yet")] * 100
    path = left_behind(task_dir, b"abc")
    streams = OutputStreams("w1", master.send)
    assert streams.resume("t1", 1, task_dir)
    await until(lambda: master.calls, master)
    await streams.close()
    assert path.read_bytes() == b"abc"  # for the next start


async def test_a_link_in_place_of_the_file_is_not_followed(task_dir: Path) -> None:
    target = task_dir.parent / "elsewhere"
    target.write_bytes(b"not the task's output")
    (task_dir / "output-1.stream").symlink_to(target)
    master = FakeMaster()
    streams = OutputStreams("w1", master.send)
    assert not streams.resume("t1", 1, task_dir)
    assert not (task_dir / "output-1.stream").is_symlink()
    assert target.read_bytes() == b"not the task's output" and not master.calls
    await streams.close()


async def test_the_same_run_again_keeps_its_new_file(task_dir: Path) -> None:
    master = FakeMaster()
    streams = OutputStreams("w1", master.send)
    streams.begin(SPEC, task_dir)  # a master that does not number runs sends it again
    streams.begin(SPEC, task_dir)
    assert (task_dir / "output-1.stream").exists()
    await streams.close()
