"""Telemetry history end to end: a real master and a real worker process; after a few
heartbeats the history API answers with their figures, for the worker and the cluster,
`cloudai history` prints them (table, JSON, PNG), and they survive a master restart."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudai.cli.api_client import ApiClient, ApiError
from cloudai.cli.main import main
from tests.harness import Process, start_master, start_worker, wait_heartbeat, wait_until

FAST = ("--interval", "0.3")


@pytest.fixture(autouse=True)
def _no_client_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CLOUDAI_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("CLOUDAI_URL", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("COLUMNS", "160")


@pytest.fixture
def procs() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in reversed(started):
        process.kill()


def points_with_data(body: dict[str, Any]) -> int:
    return sum(v is not None for v in body["series"]["cpu_usage"]["avg"])


def test_history_appears_through_the_api_and_the_cli(
    tmp_path: Path, procs: list[Process], capsys: pytest.CaptureFixture[str]
) -> None:
    master = start_master(tmp_path, "--allow-worker", "w1")
    procs.append(master)
    url = master.extra["http"]
    procs.append(start_worker(tmp_path, "w1", *FAST, master=master.extra["grpc"]))
    wait_heartbeat(url, "w1")
    api = ApiClient(url)

    def history() -> dict[str, Any] | None:
        now = time.time()
        body = api.history("w1", "cpu_usage,memory_usage,running_tasks", now - 120, now + 1, 121)
        return body if points_with_data(body) >= 3 else None  # the flush is every second

    body = wait_until(history, 20, "three points of history")
    assert body["worker_id"] == "w1" and body["tier"] == 0 and body["resolution"] == 5.0
    assert list(body["series"]) == ["cpu_usage", "memory_usage", "running_tasks"]
    assert len(body["t"]) == len(body["series"]["cpu_usage"]["avg"]) <= 121
    memory = [v for v in body["series"]["memory_usage"]["avg"] if v is not None]
    assert all(0 < v <= 100 for v in memory)
    for k, avg in enumerate(body["series"]["cpu_usage"]["avg"]):
        if avg is not None:
            low, high = body["series"]["cpu_usage"]["min"][k], body["series"]["cpu_usage"]["max"][k]
            assert low <= avg <= high

    cluster = api.history(None, "cpu_usage", time.time() - 120, time.time() + 1, 121)
    assert "worker_id" not in cluster and max(cluster["workers"]) == 1

    with pytest.raises(ApiError) as refused:
        api.history("w1", "bogus")
    assert refused.value.status == 400 and "unknown metric bogus" in refused.value.message
    with pytest.raises(ApiError) as missing:
        api.history("nobody")
    assert missing.value.status == 404

    capsys.readouterr()
    assert main(["history", "w1", "--url", url, "--since", "5m"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"cpu_usage\s+[▁▂▃▄▅▆▇█ ]+\s+\d+\.\d%", out), out
    assert "memory_usage" in out and "running_tasks" in out
    assert main(["history", "--cluster", "--url", url, "--json", "--metrics", "cpu_usage"]) == 0
    assert '"workers"' in capsys.readouterr().out
    png = tmp_path / "w1.png"
    assert main(["history", "w1", "--url", url, "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a restart keeps what was written; the API answers from the same store
    seen = points_with_data(body)
    assert master.stop() == 0
    master = start_master(tmp_path, "--allow-worker", "w1")
    procs.append(master)
    now = time.time()
    again = ApiClient(master.extra["http"]).history("w1", "cpu_usage", now - 120, now + 1, 121)
    assert points_with_data(again) >= seen


def test_history_off(tmp_path: Path, procs: list[Process]) -> None:
    master = start_master(tmp_path, "--no-history")
    procs.append(master)
    with pytest.raises(ApiError) as off:
        ApiClient(master.extra["http"]).history(None)
    assert off.value.status == 503 and "history is off" in off.value.message
