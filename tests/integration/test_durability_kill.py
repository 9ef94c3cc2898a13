"""Kill -9 of the master during a burst of task submissions while results flow back.

One --insecure master (SQLite in its data dir) and two real workers that register
themselves (``--master``). Three rounds, each a burst of 200 submissions (``echo N``)
from 4 threads through the API; the master is SIGKILLed once 30, 100 and 170 of the
round's submissions have been answered 201, restarted on the same data dir and ports,
the workers re-register by themselves (NOT_FOUND) and deliver what they spooled. Then:

- every submission answered 201 exists, and ends ``success`` (its result arrives);
- every result a worker saw acknowledged ("result of task X delivered": the worker
  deleted its spooled copy) is stored;
- no worker accepted a task twice, and no worker ran a task the master has no record of
  (the task is stored before AssignTask);
- a task stored without its AssignTask outcome is "queued" with the UNCONFIRMED message
  unless the worker ran it (then its result settled it);
- nothing was set aside by a worker (``results/rejected/``: a refused result).
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cloudai.master.persistence import UNCONFIRMED
from cloudai.store import open_store
from tests.harness import Process, start_master, start_worker, wait_until

pytestmark = pytest.mark.fault

BURST = 200
KILL_POINTS = (30, 100, 170)
THREADS = 4
WORKERS = ("w1", "w2")
FAST_RETRIES = {  # the workers come back within about a second of the master
    "CLOUDAI_BACKOFF_INITIAL": "0.1",
    "CLOUDAI_HEARTBEAT_BACKOFF_MAX": "0.5",
    "CLOUDAI_REGISTER_BACKOFF_MAX": "0.5",
}


def request(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None


@dataclass
class Burst:
    """Submissions of one round; the master is killed after ``kill_after`` answers."""

    http: str
    master: Process
    kill_after: int
    ids: list[str]
    answered: dict[str, str] = field(default_factory=dict)  # task id -> status answered
    refused: list[str] = field(default_factory=list)  # answered, not 201
    unanswered: list[str] = field(default_factory=list)  # the master died first
    killed: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _next: int = 0

    def _take(self) -> str | None:
        with self._lock:
            if self._next >= len(self.ids) or self.killed.is_set():
                return None
            self._next += 1
            return self.ids[self._next - 1]

    def _submitter(self) -> None:
        while (task_id := self._take()) is not None:
            number = task_id.rsplit("-", 1)[1]
            body = {
                "worker_id": WORKERS[int(number) % len(WORKERS)],
                "task_id": task_id,
                "command": f"echo {number}",
            }
            try:
                status, task = request("POST", f"{self.http}/api/tasks", body)
            except (OSError, urllib.error.URLError):
                with self._lock:
                    self.unanswered.append(task_id)
                return  # the master is gone
            with self._lock:
                if status != 201:
                    self.refused.append(task_id)
                    continue
                self.answered[task_id] = task["status"]
                if len(self.answered) == self.kill_after and not self.killed.is_set():
                    self.killed.set()
                    os.kill(self.master.pid, signal.SIGKILL)

    def run(self) -> None:
        threads = [threading.Thread(target=self._submitter) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        self.master.proc.wait(10)


def worker_logs(workers: list[Process]) -> str:
    return "".join(worker.log() for worker in workers)


def spooled(tmp_path: Path, worker_id: str) -> list[Path]:
    return list((tmp_path / f"work-{worker_id}" / "results").glob("*.result"))


def test_kill_9_during_a_burst_loses_nothing_acknowledged(tmp_path: Path) -> None:
    allow = [arg for w in WORKERS for arg in ("--allow-worker", w)]
    master = start_master(tmp_path, *allow)
    ports = ["--grpc-port", str(master.ready["grpc_port"]), "--http-port"]
    ports.append(str(master.ready["http_port"]))
    http = master.extra["http"]
    workers = [
        start_worker(tmp_path, w, "--interval", "0.3", master=master.extra["grpc"], **FAST_RETRIES)
        for w in WORKERS
    ]
    figures: list[dict[str, int]] = []
    all_answered: dict[str, str] = {}
    try:
        for round_, kill_after in enumerate(KILL_POINTS):

            def registered() -> bool:
                status, views = request("GET", f"{http}/api/workers")
                return status == 200 and all(v["registered"] for v in views)

            wait_until(registered, 20, "both workers registered")
            ids = [f"r{round_}-{n}" for n in range(BURST)]
            burst = Burst(http, master, kill_after, ids)
            burst.run()
            assert burst.killed.is_set(), "the master was not killed"
            assert burst.refused == [], f"refused submissions: {burst.refused[:5]}"
            all_answered.update(burst.answered)

            master = start_master(tmp_path, *allow, *ports, name=f"master-{round_ + 1}")

            # The workers re-register and deliver their spools; every answered task ends.
            def settled(answered: dict[str, str] = burst.answered) -> bool:
                if any(spooled(tmp_path, w) for w in WORKERS):
                    return False
                status, tasks = request("GET", f"{http}/api/tasks")
                if status != 200:
                    return False
                done = {t["task_id"] for t in tasks if t["status"] == "success"}
                return set(answered) <= done

            try:
                wait_until(settled, 30, f"round {round_}: results delivered after the restart")
            except AssertionError:
                _, tasks = request("GET", f"{http}/api/tasks")
                status = {t["task_id"]: t["status"] for t in tasks or []}
                missing = sorted(i for i in burst.answered if i not in status)
                unfinished = sorted(
                    i for i in burst.answered if status.get(i, "success") != "success"
                )
                raise AssertionError(
                    f"round {round_}: answered 201 but not stored: {missing[:10]} "
                    f"({len(missing)}); stored but not finished: {unfinished[:10]} "
                    f"({len(unfinished)})"
                ) from None
            with open_store(None, tmp_path / "data") as store:
                stored = {t.task_id: t for t in store.list_tasks(limit=None)}
            in_round = {i: t for i, t in stored.items() if i.startswith(f"r{round_}-")}
            unconfirmed = [t for t in in_round.values() if t.status == "queued"]
            figures.append(
                {
                    "kill_after": kill_after,
                    "answered": len(burst.answered),
                    "unanswered": len(burst.unanswered),
                    "stored": len(in_round),
                    "unconfirmed_queued": len(unconfirmed),
                }
            )
    finally:
        for worker in workers:
            worker.close()
        master.close()

    logs = worker_logs(workers)
    accepted = Counter(re.findall(r"accepted task (\S+) ", logs))
    delivered = set(re.findall(r"result of task (\S+) delivered", logs))
    with open_store(None, tmp_path / "data") as store:
        tasks = {t.task_id: t for t in store.list_tasks(limit=None)}
        results = {i for i in tasks if store.get_result(i) is not None}

    missing = set(all_answered) - set(tasks)
    assert not missing, f"answered 201 but not stored: {sorted(missing)[:10]}"
    assert all(tasks[i].status == "success" for i in all_answered)
    lost_results = delivered - results
    assert not lost_results, f"acknowledged results not stored: {sorted(lost_results)[:10]}"
    twice = [i for i, n in accepted.items() if n > 1]
    assert not twice, f"accepted twice: {twice}"
    unknown = set(accepted) - set(tasks)
    assert not unknown, f"a worker ran tasks the master never stored: {sorted(unknown)[:10]}"
    for task in tasks.values():
        if task.status == "queued":
            assert task.message == UNCONFIRMED
            assert task.task_id not in accepted, f"{task.task_id} ran but stays queued"
        if task.task_id in accepted:
            assert task.status == "success", task
    for worker_id in WORKERS:
        rejected = tmp_path / f"work-{worker_id}" / "results" / "rejected"
        assert not rejected.exists() or not any(rejected.iterdir()), "a result was refused"
    print("kill -9 rounds:", json.dumps(figures))
    print(
        f"answered {len(all_answered)}, delivered results {len(delivered)},"
        f" accepted by workers {len(accepted)}, stored {len(tasks)}"
    )
