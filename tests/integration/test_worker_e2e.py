"""End to end: a real master and real workers as processes on loopback."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import orjson
import psutil
import pytest

from tests.harness import Process, async_wait_until, start_master, start_worker

FAST = ["--interval", "0.3"]


@pytest.fixture
def procs() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        process.kill()


@pytest.fixture
async def api() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def get_json(api: aiohttp.ClientSession, url: str) -> object:
    async with api.get(url) as r:
        return await r.json() if r.status == 200 else None


async def worker_view(api: aiohttp.ClientSession, master: Process, worker_id: str) -> dict | None:
    return await get_json(api, f"{master.extra['http']}/api/workers/{worker_id}")  # type: ignore[return-value]


async def wait_active(api: aiohttp.ClientSession, master: Process, worker_id: str) -> dict:
    async def active() -> dict | None:
        view = await worker_view(api, master, worker_id)
        # memory_usage > 0: a real heartbeat arrived (registration alone reports zeros)
        return view if view and view["is_active"] and view["memory_usage"] > 0 else None

    return await async_wait_until(active, 20, f"{worker_id} active")


async def submit(api: aiohttp.ClientSession, master: Process, worker_id: str, command: str) -> str:
    async with api.post(
        f"{master.extra['http']}/api/tasks", json={"worker_id": worker_id, "command": command}
    ) as r:
        body = await r.json()
        assert r.status == 201, body
        return body["task_id"]


async def task_status(
    api: aiohttp.ClientSession,
    master: Process,
    task_id: str,
    statuses: set[str],
    timeout: float = 20,
) -> dict:
    async def done() -> dict | None:
        task = await get_json(api, f"{master.extra['http']}/api/tasks/{task_id}")
        return task if task and task["status"] in statuses else None  # type: ignore[index]

    return await async_wait_until(done, timeout, f"task {task_id} in {statuses}")


def assert_real_usage(view: dict) -> None:
    for name in ("cpu_usage", "memory_usage", "storage_usage", "gpu_usage"):
        assert 0.0 <= view[name] <= 100.0, (name, view[name])
    total_memory_gb = psutil.virtual_memory().total / 2**30  # the worker reports GiB
    assert view["total_cpu"] == psutil.cpu_count()
    assert view["total_memory"] == pytest.approx(total_memory_gb, rel=0.05)
    assert view["total_storage"] > 1.0
    assert view["memory_usage"] > 0.0


async def test_join_by_registering_itself(
    tmp_path: Path, procs: list[Process], api: aiohttp.ClientSession
) -> None:
    master = start_master(tmp_path, "--allow-worker", "w1")
    procs.append(master)
    procs.append(start_worker(tmp_path, "w1", *FAST, master=master.extra["grpc"]))
    view = await wait_active(api, master, "w1")
    assert_real_usage(view)


async def test_join_when_the_admin_registers_it(
    tmp_path: Path, procs: list[Process], api: aiohttp.ClientSession
) -> None:
    master = start_master(tmp_path)
    procs.append(master)
    worker = start_worker(tmp_path, "w2", *FAST)  # waits for MasterRegister
    procs.append(worker)
    assert "register w2 " in worker.log()
    async with api.post(
        f"{master.extra['http']}/api/workers",
        json={"worker_id": "w2", "address": worker.extra["address"]},
    ) as r:
        assert r.status == 201
    view = await wait_active(api, master, "w2")
    assert_real_usage(view)


async def test_task_runs_is_listed_and_completes(
    tmp_path: Path, procs: list[Process], api: aiohttp.ClientSession
) -> None:
    master = start_master(tmp_path, "--allow-worker", "w1")
    procs.append(master)
    procs.append(start_worker(tmp_path, "w1", *FAST, master=master.extra["grpc"]))
    await wait_active(api, master, "w1")
    marker = tmp_path / "go"
    command = (
        'python3 -c "import pathlib,time,sys\n'
        "print('hello from the task')\n"
        "print('to stderr', file=sys.stderr)\n"
        f"while not pathlib.Path('{marker}').exists(): time.sleep(0.05)\n"
        'sys.exit(3)"'
    )
    async with api.ws_connect(master.extra["ws"] + "/ws/telemetry/w1") as ws:
        task_id = await submit(api, master, "w1", command)

        async def listed() -> bool:
            msg = await asyncio.wait_for(ws.receive(), 10)
            state = orjson.loads(msg.data).get("w1", {})
            return any(
                t["task_id"] == task_id and t["status"] == "running"
                for t in state.get("running_tasks", [])
            )

        await async_wait_until(listed, 20, "the task in running_tasks")
    marker.touch()
    task = await task_status(api, master, task_id, {"success", "failure"})
    assert task["status"] == "failure" and task["exit_code"] == 3
    assert "hello from the task" in task["logs"] and "to stderr" in task["logs"]
    async with api.get(f"{master.extra['http']}/api/tasks/{task_id}/logs") as r:
        assert "hello from the task" in (await r.json())["logs"]

    ok = await submit(api, master, "w1", "echo fine")
    task = await task_status(api, master, ok, {"success", "failure"})
    assert task["status"] == "success" and task["exit_code"] == 0 and "fine" in task["logs"]


async def test_cancel_kills_the_process_tree(
    tmp_path: Path, procs: list[Process], api: aiohttp.ClientSession
) -> None:
    master = start_master(tmp_path, "--allow-worker", "w1")
    procs.append(master)
    procs.append(start_worker(tmp_path, "w1", *FAST, master=master.extra["grpc"]))
    await wait_active(api, master, "w1")
    tag = f"cloudai-cancel-{tmp_path.name}"
    task_id = await submit(
        api,
        master,
        "w1",
        f"sleep 300 {tag} & sleep 301 {tag} & wait".replace(f" {tag}", "") + f" # {tag}",
    )

    def tree() -> list[psutil.Process]:
        found = []
        for proc in psutil.process_iter(["cmdline"]):
            cmdline = " ".join(proc.info["cmdline"] or [])
            if tag in cmdline:
                found.append(proc)
                found.extend(proc.children(recursive=True))
        return found

    await async_wait_until(lambda: len(tree()) >= 3, 20, "the task's shell and its children")
    pids = [p.pid for p in tree()]
    async with api.post(f"{master.extra['http']}/api/tasks/{task_id}/cancel") as r:
        assert r.status == 202, await r.text()
    task = await task_status(api, master, task_id, {"cancelled", "success", "failure"})
    assert task["status"] == "cancelled"
    await async_wait_until(lambda: not any(psutil.pid_exists(pid) for pid in pids), 15)


async def test_worker_resumes_after_master_restart(
    tmp_path: Path, procs: list[Process], api: aiohttp.ClientSession
) -> None:
    master = start_master(tmp_path, "--allow-worker", "w1")
    procs.append(master)
    grpc_port = str(master.ready["grpc_port"])
    procs.append(start_worker(tmp_path, "w1", *FAST, master=master.extra["grpc"]))
    await wait_active(api, master, "w1")
    master.kill()  # SIGKILL: no goodbye
    master = start_master(tmp_path, "--grpc-port", grpc_port, name="master2")
    procs.append(master)
    # The registry came back from the store; the worker re-registers and heartbeats.
    view = await wait_active(api, master, "w1")
    assert view["registered"] is True


async def test_killed_worker_goes_inactive_and_dashboards_see_it(
    tmp_path: Path, procs: list[Process], api: aiohttp.ClientSession
) -> None:
    master = start_master(tmp_path, "--allow-worker", "w1", "--inactivity-timeout", "1.5")
    procs.append(master)
    worker = start_worker(tmp_path, "w1", *FAST, master=master.extra["grpc"])
    procs.append(worker)
    await wait_active(api, master, "w1")
    async with api.ws_connect(master.extra["ws"] + "/ws/telemetry") as ws:
        snapshot = orjson.loads((await ws.receive()).data)
        assert snapshot["w1"]["is_active"] is True
        worker.send_signal(signal.SIGKILL)

        async def inactive() -> bool:
            msg = await asyncio.wait_for(ws.receive(), 10)
            return orjson.loads(msg.data).get("w1", {}).get("is_active") is False

        await async_wait_until(inactive, 20, "the inactive transition on the stream")


async def test_result_is_delivered_after_the_master_returns(
    tmp_path: Path, procs: list[Process], api: aiohttp.ClientSession
) -> None:
    master = start_master(tmp_path, "--allow-worker", "w1")
    procs.append(master)
    grpc_port = str(master.ready["grpc_port"])
    procs.append(start_worker(tmp_path, "w1", *FAST, master=master.extra["grpc"]))
    await wait_active(api, master, "w1")
    marker = tmp_path / "finish"
    task_id = await submit(
        api, master, "w1", f"while [ ! -e {marker} ]; do sleep 0.05; done; echo finished-while-away"
    )
    await task_status(api, master, task_id, {"running"})
    assert master.stop() == 0
    marker.touch()  # the task ends while no master is there
    master = start_master(tmp_path, "--grpc-port", grpc_port, name="master2")
    procs.append(master)
    task = await task_status(api, master, task_id, {"success", "failure"}, timeout=30)
    assert task["status"] == "success" and "finished-while-away" in task["logs"]
