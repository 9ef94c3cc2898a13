"""`cloudai top` rendered headless on a real pty against a real master."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_worker import FakeWorkerProcess, start_fake_worker
from tests.harness import Process, child_env, cloudai_command, start_master
from tests.pty_terminal import PtyTerminal


@pytest.fixture
def master(tmp_path: Path) -> Iterator[Process]:
    process = start_master(tmp_path, "--allow-worker", "w1")
    yield process
    process.kill()


@pytest.fixture
def worker(tmp_path: Path, master: Process) -> Iterator[FakeWorkerProcess]:
    process = start_fake_worker(tmp_path, "w1", "--master", master.extra["grpc"], "--cpu", "42")
    yield process
    process.kill()


def test_top_shows_the_cluster_and_quits_on_q(
    tmp_path: Path, master: Process, worker: FakeWorkerProcess
) -> None:
    term = PtyTerminal(
        cloudai_command("top", "--url", master.extra["http"]),
        env=child_env(),
        cwd=tmp_path,
        rows=24,
        columns=110,
    )
    try:
        # Full screen: the alternate screen is used and restored.
        term.expect(r"● connected")
        term.expect(r"w1\s+active\s+\S+\s+42\.0%\s+\S+\s+33\.0%\s+\S+\s+7\.0%\s+0\s+\d")
        term.expect(r"workers 1 \(1 active\)")
        assert b"\x1b[?1049h" in term.raw()

        # The master goes away: top says so and keeps retrying.
        mark = term.mark()
        master.kill()
        term.expect(r"disconnected: ", since=mark)
        term.expect(r"retrying in \d", since=mark)

        term.write("q")
        assert term.wait() == 0
        assert b"\x1b[?1049l" in term.raw()
        assert "Traceback" not in term.text()
    finally:
        term.close()


def test_top_reconnects_when_the_master_comes_back(tmp_path: Path) -> None:
    first = start_master(tmp_path, "--allow-worker", "w1", name="first")
    url = first.extra["http"]
    port = first.ready["http_port"]
    term = PtyTerminal(
        cloudai_command("top", "--url", url), env=child_env(), cwd=tmp_path, columns=110
    )
    second: Process | None = None
    try:
        term.expect(r"● connected")
        term.expect(r"no workers yet")
        mark = term.mark()
        first.stop()
        term.expect(r"disconnected", since=mark)
        second = start_master(
            tmp_path, "--allow-worker", "w9", "--http-port", str(port), name="second"
        )
        fake = start_fake_worker(tmp_path, "w9", "--master", second.extra["grpc"])
        try:
            mark = term.mark()
            term.expect(r"● connected", since=mark, timeout=30)
            term.expect(r"w9\s+active", since=mark)
        finally:
            fake.kill()
        term.write("\x03")  # Ctrl-C quits too
        assert term.wait() == 0
    finally:
        term.close()
        first.kill()
        if second is not None:
            second.kill()
