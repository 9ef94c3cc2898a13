"""Live task output end to end: a real master and a real worker (``tests/harness.py``).

- a task's output shows through ``GET /api/tasks/{id}/output`` while it runs;
- ``cloudai logs -f`` follows it and ends with the task;
- a 50 MB output comes back byte for byte with ``cloudai logs --output`` (sha256; this
  one takes several seconds: it moves 50 MB twice);
- a master killed and started again on the same data dir and ports loses none of it;
- a worker killed mid-task (the master stopped, so that output piles up on the worker)
  sends the rest when it starts again, before the task's result;
- a worker may not append to another worker's task.

Latency and transfer figures are printed (``pytest -s``), never asserted.
"""

from __future__ import annotations

import hashlib
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from cloudai.api.models import JoinRequest
from cloudai.cli.api_client import ApiClient, ApiError
from cloudai.proto import pb, rpc
from cloudai.security import pki
from cloudai.security.tokens import Scope
from tests.harness import (
    Process,
    admin_client,
    child_env,
    cloudai_command,
    start_master,
    start_worker,
    wait_until,
)

TICKS = (
    'python3 -c "import time\nfor i in range({n}):\n'
    "    print(f'{{i}} {{time.time()}}', flush=True); time.sleep({every})\""
)
BIG = 50_000_000
BIG_COMMAND = (
    'python3 -c "import sys; b = bytes(range(256)) * 4096; w = sys.stdout.buffer.write\n'
    f'for i in range({BIG} // len(b)): w(b)\nw(b[: {BIG} % len(b)])"'
)


def big_output() -> bytes:
    block = bytes(range(256)) * 4096
    return block * (BIG // len(block)) + block[: BIG % len(block)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Process, Process, Any]]:
    workdir = tmp_path_factory.mktemp("output")
    master = start_master(workdir, "--allow-worker", "w1")
    worker = start_worker(workdir, "w1", "--interval", "0.3", master=master.extra["grpc"])
    try:
        api = admin_client(master)
        wait_until(lambda: api.worker("w1").is_active, 20, "w1 active")
        yield master, worker, api
    finally:
        worker.kill()
        master.kill()


def logs_command(master: Process, *args: str) -> list[str]:
    return cloudai_command("logs", *args, "--url", master.extra["http"])


def test_output_shows_while_the_task_runs(cluster: tuple[Process, Process, Any]) -> None:
    _master, _worker, api = cluster
    task = api.submit("w1", command=TICKS.format(n=30, every=0.2))  # 6 s
    first = wait_until(lambda: api.output(task.task_id, wait=5).data or None, 15, "output")
    assert first.startswith(b"0 ")
    # It is not over: the task still runs and the output says so.
    assert not api.task(task.task_id).status.finished
    assert not api.output(task.task_id).complete
    last = wait_until(lambda: (c := api.output(task.task_id)).complete and c, 20, "the end")
    lines = last.data.decode().splitlines()
    assert [int(line.split()[0]) for line in lines] == list(range(30))
    assert last.size == last.next_offset == len(last.data) and not last.truncated


def test_logs_follow_shows_the_output_as_it_comes_and_ends(
    cluster: tuple[Process, Process, Any],
) -> None:
    master, _worker, api = cluster
    task = api.submit("w1", command=TICKS.format(n=10, every=0.2) + "; exit 3")
    follow = subprocess.Popen(
        logs_command(master, "-f", task.task_id),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(),
    )
    delays = []
    try:
        assert follow.stdout is not None
        seen = []
        for raw in follow.stdout:
            number, printed = raw.split()
            delays.append(time.time() - float(printed))
            seen.append(int(number))
        assert follow.wait(20) == 0
    finally:
        follow.kill()
    assert seen == list(range(10))
    assert follow.stderr is not None
    assert "failure, exit code 3" in follow.stderr.read().decode()
    # After the first line (the CLI's start-up), how long a line took to show.
    shown = sorted(delays[1:])
    print(
        f"\nlogs -f: print to screen {shown[len(shown) // 2]:.3f} s median, {shown[-1]:.3f} s max"
    )


def test_each_attempt_of_a_retried_task_has_its_own_output(
    cluster: tuple[Process, Process, Any],
) -> None:
    master, worker, api = cluster
    # The first run waits for a file in its task directory (its current directory), so
    # that `logs -f` starts during it; the second finds the file and ends at once.
    task = api.submit(
        "w1", command="echo run; until [ -e release ]; do sleep 0.05; done; exit 1", retries=1
    )
    follow = subprocess.Popen(
        logs_command(master, "-f", task.task_id),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(),
    )
    try:
        assert follow.stdout is not None and follow.stderr is not None
        assert follow.stdout.readline() == b"run\n"
        (Path(worker.ready["work_dir"]) / "tasks" / task.task_id / "release").touch()
        assert follow.wait(60) == 0
        assert follow.stdout.read() == b"run\n"  # the second run's
        stderr = follow.stderr.read().decode()
    finally:
        follow.kill()
    assert f"task {task.task_id}: attempt 2 follows" in stderr
    assert "failure, exit code 1" in stderr
    for attempt in (1, 2):
        run = api.output(task.task_id, attempt=attempt)
        assert (run.data, run.complete, run.attempt) == (b"run\n", True, attempt)


def test_a_50_mb_output_is_kept_byte_for_byte(
    cluster: tuple[Process, Process, Any], tmp_path: Path
) -> None:
    """Slow (several seconds): 50 MB go from the task to the worker, the master and back."""
    master, _worker, api = cluster
    started = time.monotonic()
    task = api.submit("w1", command=BIG_COMMAND)
    target = tmp_path / "output.bin"
    done = subprocess.run(
        logs_command(master, "-f", task.task_id, "--output", str(target)),
        capture_output=True,
        env=child_env(),
        timeout=120,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert f"{BIG} bytes written" in done.stderr.decode()
    assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(big_output()).digest()
    started = time.monotonic()
    again = subprocess.run(
        logs_command(master, task.task_id, "--output", str(target)),
        capture_output=True,
        env=child_env(),
    )
    assert again.returncode == 0 and target.stat().st_size == BIG
    print(
        f"\n50 MB: task start to the whole output on disk {elapsed:.2f} s; "
        f"read back {time.monotonic() - started:.2f} s"
    )
    # The result still carries the tail, as for the Go master.
    assert api.logs(task.task_id).logs_truncated


def test_a_master_restart_loses_no_output(tmp_path: Path) -> None:
    master = start_master(tmp_path, "--allow-worker", "w1")
    ports = [
        "--grpc-port",
        str(master.ready["grpc_port"]),
        "--http-port",
        str(master.ready["http_port"]),
    ]
    worker = start_worker(tmp_path, "w1", "--interval", "0.3", master=master.extra["grpc"])
    task_log = tmp_path / "work-w1" / "tasks" / "t-restart" / "output.log"
    try:
        api = admin_client(master)
        wait_until(lambda: api.worker("w1").is_active, 20, "w1 active")
        api.submit("w1", command=TICKS.format(n=40, every=0.1), task_id="t-restart")
        wait_until(lambda: api.output("t-restart").size > 0, 15, "the first output")
        master.kill()  # SIGKILL
        # The task goes on printing while the master is down.
        wait_until(lambda: task_log.read_bytes().count(b"\n") >= 25, 20, "more output")
        master = start_master(tmp_path, "--allow-worker", "w1", *ports, name="master-2")
        api = admin_client(master)
        done = subprocess.run(
            logs_command(master, "-f", "t-restart"),
            capture_output=True,
            env=child_env(),
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        numbers = [int(line.split()[0]) for line in done.stdout.decode().splitlines()]
        assert numbers == list(range(40))
        assert not list(task_log.parent.glob("*.stream"))  # delivered: the worker's copy went
    finally:
        worker.kill()
        master.kill()


def stopped(pid: int) -> bool:
    """Every thread of ``pid`` is stopped (SIGSTOP took effect)."""
    try:
        states = [
            (thread / "stat").read_text().rsplit(")", 1)[1].split()[0]
            for thread in Path(f"/proc/{pid}/task").iterdir()
        ]
    except FileNotFoundError:  # a thread ended meanwhile: look again
        return False
    return all(state in ("T", "t") for state in states)


def test_a_killed_worker_sends_the_rest_of_the_output_when_it_starts_again(
    tmp_path: Path,
) -> None:
    # The restarted worker (a new port) registers once the killed one is inactive.
    master = start_master(tmp_path, "--allow-worker", "w1", "--inactivity-timeout", "1.5")
    worker = start_worker(tmp_path, "w1", "--interval", "0.3", master=master.extra["grpc"])
    tasks = tmp_path / "work-w1" / "tasks"
    try:
        api = admin_client(master)
        wait_until(lambda: api.worker("w1").is_active, 20, "w1 active")
        api.submit("w1", command=TICKS.format(n=5000, every=0.02), task_id="t-killed")
        wait_until(lambda: api.output("t-killed").size > 0, 15, "output the master holds")
        (stream,) = tasks.glob("t-killed/output-*.stream")
        master.send_signal(signal.SIGSTOP)  # takes nothing more; the worker keeps it on disk
        try:
            wait_until(lambda: stopped(master.pid), 10, "the master stopped")
            # The most the master can hold: the worker's one call in flight waits for
            # its answer (up to 5 s) before the next is sent.
            sent = stream.stat().st_size
            wait_until(lambda: stream.stat().st_size > sent, 15, "output the master lacks")
            worker.kill()  # SIGKILL, mid-task
        finally:
            master.send_signal(signal.SIGCONT)
        written = stream.read_bytes()  # what the worker took of the task's output
        assert api.output("t-killed").size < len(written)
        assert (tasks / "t-killed" / "output.log").read_bytes().startswith(written)
        orphan = tasks / "t-old" / "output-1.stream"  # of a run whose result went long ago
        orphan.parent.mkdir()
        orphan.write_bytes(b"old\n")

        worker = start_worker(tmp_path, "w1", "--interval", "0.3", master=master.extra["grpc"])
        assert not orphan.exists()
        assert worker.log().count("removed 1 live output file(s)") == 1
        wait_until(lambda: api.task("t-killed").status == "failure", 30, "the result")
        # The output came first: all of it is there, complete, once the result is.
        output = api.output("t-killed")
        assert output.data == written and output.complete and not output.truncated
        lines = written.split(b"\n")[:-1]  # whole lines (the last may be cut)
        assert [int(line.split()[0]) for line in lines] == list(range(len(lines)))
        assert not list(tasks.glob("t-killed/*.stream"))  # the master has it: deleted
        assert "the worker stopped while the task was running" in api.logs("t-killed").logs
        assert "Traceback" not in worker.log()
    finally:
        worker.kill()
        master.kill()


def test_a_worker_may_not_append_to_another_workers_task(tmp_path: Path) -> None:
    master = start_master(tmp_path, "--allow-worker", "w1", "--allow-worker", "w2")
    try:
        api = admin_client(master)
        with grpc.insecure_channel(master.extra["grpc"]) as channel:
            stub = rpc.MasterWorkerStub(channel)
            for worker_id in ("w1", "w2"):
                info = pb.WorkerInfo(worker_id=worker_id, worker_ip="127.0.0.1:9", total_cpu=1)
                assert stub.RegisterWorker(info).success
            with pytest.raises(ApiError):  # stored; its worker (nobody at :9) never answers
                api.submit("w1", command="true", task_id="t-owned")
            stolen = pb.TaskOutput(task_id="t-owned", worker_id="w2", attempt=1, data=b"x")
            for _ in range(20):
                ack = stub.AppendTaskOutput(stolen)
                assert not ack.success and "not 'w2'" in ack.message
            own = pb.TaskOutput(task_id="t-owned", worker_id="w1", attempt=1, data=b"mine")
            assert stub.AppendTaskOutput(own).next_offset == 4
            with pytest.raises(grpc.RpcError) as refused:
                stub.AppendTaskOutput(
                    pb.TaskOutput(task_id="t-owned", worker_id="w1", data=b"x" * (2 << 20))
                )
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert api.output("t-owned").data == b"mine"
        log = master.log()
        assert log.count("refused AppendTaskOutput") <= 2  # logged once per peer a minute
        assert "Traceback" not in log
    finally:
        master.kill()


def test_secure_mode_streams_and_only_the_tasks_own_certificate_appends(tmp_path: Path) -> None:
    """With TLS: a joined worker streams its task's output; another worker's genuine
    certificate can neither act for it nor append to its task; a read token reads."""
    master = start_master(tmp_path, secure=True)
    worker: Process | None = None
    try:
        api = admin_client(master)
        token = api.create_join_token(uses=1, worker_id="w1")
        worker = start_worker(
            tmp_path, "w1", "--interval", "0.3", master=master.extra["grpc"], join=token.token
        )
        wait_until(lambda: api.worker("w1").is_active, 20, "w1 active")
        api.submit("w1", command="echo secret output", task_id="t-secure")
        wait_until(lambda: api.output("t-secure").complete, 20, "the output")
        reader = ApiClient(
            master.extra["http"],
            api.create_api_token(Scope.READ, name="dashboard").token,
            ca_file=Path(master.extra["ca_file"]),
        )
        assert reader.output("t-secure").data == b"secret output\n"

        # w2 joins the legitimate way, then tries w1's task.
        key = pki.new_key()
        joined = ApiClient(master.extra["http"], None, ca_file=Path(master.extra["ca_file"])).join(
            JoinRequest(
                token=api.create_join_token(uses=1, worker_id="w2").token,
                worker_id="w2",
                csr_pem=pki.create_csr(key, "w2").decode(),
            )
        )
        credentials = grpc.ssl_channel_credentials(
            root_certificates=Path(master.extra["ca_file"]).read_bytes(),
            private_key=pki.key_pem(key),
            certificate_chain=joined.certificate_pem.encode(),
        )
        options = [("grpc.ssl_target_name_override", pki.MASTER_DNS)]
        with grpc.secure_channel(master.extra["grpc"], credentials, options) as channel:
            stub = rpc.MasterWorkerStub(channel)
            posing = pb.TaskOutput(task_id="t-secure", worker_id="w1", attempt=1, data=b"forged")
            for _ in range(5):
                with pytest.raises(grpc.RpcError) as refused:
                    stub.AppendTaskOutput(posing)
                assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert stub.RegisterWorker(pb.WorkerInfo(worker_id="w2", total_cpu=1)).success
            own = pb.TaskOutput(task_id="t-secure", worker_id="w2", attempt=1, data=b"forged")
            ack = stub.AppendTaskOutput(own)
            assert not ack.success and "assigned to worker 'w1'" in ack.message
        assert api.output("t-secure").data == b"secret output\n"
        assert "Traceback" not in master.log()
    finally:
        if worker is not None:
            worker.kill()
        master.kill()


def test_output_past_the_retention_is_deleted(tmp_path: Path) -> None:
    """A master keeping output 2 s after a task finished: the output, then 410 with one
    line (the task and its logs stay); `cloudai logs --output` says it in one line."""
    master = start_master(tmp_path, "--allow-worker", "w1", CLOUDAI_TASK_OUTPUT_RETENTION="2")
    worker = start_worker(tmp_path, "w1", "--interval", "0.3", master=master.extra["grpc"])
    try:
        api = admin_client(master)
        wait_until(lambda: api.worker("w1").is_active, 20, "w1 active")
        api.submit("w1", command="echo kept for a while", task_id="t-retained")
        wait_until(lambda: api.task("t-retained").status == "success", 20, "the task done")
        wait_until(lambda: api.output("t-retained", wait=0).complete, 20, "the output complete")

        def deleted() -> bool:
            try:
                api.output("t-retained")
            except ApiError as exc:
                assert exc.status == 410, exc
                return True
            return False

        wait_until(deleted, 30, "the output deleted past its retention")
        with pytest.raises(ApiError) as gone:
            api.output("t-retained")
        assert gone.value.status == 410
        assert "deleted at" in gone.value.message
        assert "task_output_retention" in gone.value.message
        assert api.task("t-retained").status == "success"  # the task stays
        assert "kept for a while" in api.logs("t-retained").logs  # and its logs
        done = subprocess.run(
            logs_command(master, "t-retained", "--output", str(tmp_path / "out.bin")),
            capture_output=True,
            text=True,
            env=child_env(),
            timeout=60,
        )
        assert done.returncode != 0 and "task_output_retention" in done.stderr, done
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    finally:
        worker.kill()
        master.kill()
