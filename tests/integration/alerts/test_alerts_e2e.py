"""Alert rules end to end: a real master with a rules file, a worker's heartbeats sent
over gRPC (cpu_usage 95, then 10), an in-test webhook receiver (aiohttp), the API, the
CLI, a silence, SIGHUP; and, where Debian's prometheus-alertmanager is installed, a real
Alertmanager that the alert is read back from."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from aiohttp import web

from cloudai.proto import pb, rpc
from tests.harness import (
    Process,
    async_wait_until,
    child_env,
    cloudai_command,
    start_master,
    wait_until,
)

RULES = """
[[rule]]
name = "high-cpu"
metric = "cpu_usage"
comparison = ">"
threshold = 90
resolve_threshold = 50
for = "2s"
severity = "critical"
labels = { team = "infra" }

[[rule]]
name = "hot-memory"
metric = "memory_usage"
threshold = 90
"""


class Receiver:
    """An Alertmanager-like webhook: keeps every alert posted to /api/v2/alerts."""

    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/v2/alerts", self._post)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/api/v2/alerts"

    async def _post(self, request: web.Request) -> web.Response:
        body = await request.json()
        assert isinstance(body, list)
        self.alerts.extend(body)
        return web.Response(status=200)

    def named(self, name: str, ended: bool | None = None) -> list[dict[str, Any]]:
        found = [a for a in self.alerts if a["labels"]["alertname"] == name]
        if ended is None:
            return found
        return [a for a in found if (a["endsAt"] <= _now_rfc3339()) == ended]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def _now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + 1)) + ".999Z"


class Heartbeats:
    """One worker's heartbeats with a settable cpu/memory usage, every 0.2 s."""

    def __init__(self, grpc_address: str, worker_id: str = "w1") -> None:
        self.address = grpc_address
        self.worker_id = worker_id
        self.cpu = 10.0
        self.memory = 10.0
        self.sent = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._channel = grpc.aio.insecure_channel(self.address)
        self._stub = rpc.MasterWorkerStub(self._channel)
        info = pb.WorkerInfo(worker_id=self.worker_id, total_cpu=2, total_memory=4)
        ack = await self._stub.RegisterWorker(info)
        assert ack.success, ack.message
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            hb = pb.Heartbeat(
                worker_id=self.worker_id, cpu_usage=self.cpu, memory_usage=self.memory
            )
            await self._stub.SendHeartbeat(hb)
            self.sent += 1
            await asyncio.sleep(0.2)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._channel.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hook = Receiver()
    await hook.start()
    yield hook
    await hook.stop()


async def _master(tmp_path: Path, *webhooks: str) -> Process:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    args = ["--alert-rules", str(rules), "--alert-interval", "0.2"]
    args += ["--allow-worker", "w1", "--allow-worker", "am-worker"]
    for url in webhooks:
        args += ["--alert-webhook", url]
    return await asyncio.to_thread(start_master, tmp_path, *args)


async def test_a_rule_fires_reaches_the_webhook_and_resolves(
    tmp_path: Path, receiver: Receiver
) -> None:
    master = await _master(tmp_path, receiver.url)
    http = aiohttp.ClientSession(master.extra["http"])
    worker = Heartbeats(master.extra["grpc"])
    try:
        # a silence first: hot-memory on w1 will fire, and send nothing
        async with http.post(
            "/api/silences",
            json={
                "matchers": [{"name": "alertname", "value": "hot-memory"}],
                "duration_seconds": 3600,
                "comment": "known",
            },
        ) as r:
            assert r.status == 201, await r.text()
            silence = await r.json()
        await worker.start()
        worker.memory = 95.0
        worker.cpu = 95.0
        burning_since = time.monotonic()
        await async_wait_until(lambda: receiver.named("high-cpu"), 20, "high-cpu at the webhook")
        assert time.monotonic() - burning_since >= 2.0  # not before `for`
        (firing,) = receiver.named("high-cpu")
        assert firing["labels"] == {
            "alertname": "high-cpu",
            "worker_id": "w1",
            "severity": "critical",
            "team": "infra",
        }
        assert firing["annotations"]["value"] == "95"
        assert firing["generatorURL"].endswith("/api/alerts")
        async with http.get("/api/alerts", params={"state": "firing"}) as r:
            current = {a["rule"]: a for a in await r.json()}
        assert current["high-cpu"]["worker_id"] == "w1"
        assert current["hot-memory"]["silenced"] is True  # tracked, not sent

        worker.cpu = 70.0  # above the resolve threshold (50): still firing
        sent = worker.sent
        await async_wait_until(lambda: worker.sent >= sent + 3, 10, "heartbeats at 70")
        assert len(receiver.named("high-cpu")) == 1
        worker.cpu = 10.0  # the burner stops
        await async_wait_until(
            lambda: receiver.named("high-cpu", ended=True), 20, "high-cpu resolved"
        )
        assert receiver.named("hot-memory") == []  # the silenced alert sent nothing

        async with http.get("/api/alerts/history", params={"rule": "high-cpu"}) as r:
            history = await r.json()
        assert [e["state"] for e in history] == ["resolved", "firing"]
        async with http.get("/api/alerts/history", params={"rule": "hot-memory"}) as r:
            assert [e["silenced"] for e in await r.json()] == [True]

        # the CLI lists them through the API
        listing = await asyncio.to_thread(
            subprocess.run,
            cloudai_command("alerts", "--url", master.extra["http"], "--plain"),
            capture_output=True,
            text=True,
            env=child_env(),
            timeout=30,
        )
        assert listing.returncode == 0, listing.stderr
        header, *rows = listing.stdout.splitlines()
        assert header.split("\t")[:3] == ["rule", "worker_id", "state"]
        assert any(r.startswith("hot-memory\tw1\tfiring") for r in rows)
        assert any(r.startswith("high-cpu\tw1\tresolved") for r in rows)

        async with http.delete(f"/api/silences/{silence['silence_id']}") as r:
            assert r.status == 200
        await async_wait_until(lambda: receiver.named("hot-memory"), 20, "unsilenced alert")

        # SIGHUP with a bad file: one clear line, the old rules stay
        (tmp_path / "rules.toml").write_text("[[rule]]\nname = 'x'\n")
        master.send_signal(signal.SIGHUP)
        await async_wait_until(
            lambda: "alert rules not reloaded" in master.log(), 10, "the reload's error line"
        )
        async with http.get("/api/alert-rules") as r:
            assert sorted(rule["name"] for rule in await r.json()) == ["high-cpu", "hot-memory"]
        assert master.proc.poll() is None
    finally:
        await worker.stop()
        await http.close()
        master.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    """A real Alertmanager on a free loopback port; its base URL."""
    if ALERTMANAGER is None:
        pytest.skip("prometheus-alertmanager is not installed (.ci/run installs it)")
    config = tmp_path / "alertmanager.yml"
    config.write_text(
        "route:\n  receiver: nowhere\n  group_wait: 1h\nreceivers:\n  - name: nowhere\n"
    )
    port = _free_port()
    log_path = tmp_path / "alertmanager.log"
    with open(log_path, "wb") as log:
        manager = subprocess.Popen(
            [
                ALERTMANAGER,
                f"--config.file={config}",
                f"--storage.path={tmp_path / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if manager.poll() is not None:
            raise AssertionError(log_path.read_text())
        try:
            with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    try:
        wait_until(ready, 30, "Alertmanager to be ready")
        yield base
    finally:
        manager.terminate()
        try:
            manager.wait(10)
        except subprocess.TimeoutExpired:
            manager.kill()
            manager.wait()


async def test_a_real_alertmanager_receives_the_alert(tmp_path: Path, alertmanager: str) -> None:
    base = alertmanager
    master = await _master(tmp_path, f"{base}/api/v2/alerts")
    worker = Heartbeats(master.extra["grpc"], "am-worker")
    try:
        async with aiohttp.ClientSession() as http:
            await worker.start()
            worker.cpu = 99.0

            async def in_alertmanager(active_only: bool = False) -> list[dict[str, Any]]:
                params = {"filter": 'alertname="high-cpu"'}
                if active_only:
                    params["active"] = "true"
                async with http.get(f"{base}/api/v2/alerts", params=params) as r:
                    assert r.status == 200
                    alerts = await r.json()
                return [a for a in alerts if a["labels"]["worker_id"] == "am-worker"]

            (alert,) = await async_wait_until(in_alertmanager, 30, "the alert in Alertmanager")
            assert alert["labels"]["severity"] == "critical"
            assert alert["labels"]["team"] == "infra"
            assert alert["status"]["state"] == "active"
            assert alert["annotations"]["value"] == "99"

            worker.cpu = 1.0

            async def resolved() -> bool:
                return not await in_alertmanager(active_only=True)

            await async_wait_until(resolved, 30, "the alert resolved in Alertmanager")
    finally:
        await worker.stop()
        master.close()
