"""`cloudai top` rendered headless on a real pty against a real master."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import (
    PERCENT,
    Process,
    child_env,
    cloudai_command,
    plausible_percent,
    start_master,
    start_worker,
    wait_heartbeat,
)
from tests.pty_terminal import PtyTerminal


@pytest.fixture
def master(tmp_path: Path) -> Iterator[Process]:
    process = start_master(tmp_path, "--allow-worker", "w1")
    yield process
    process.kill()


FAST = ("--interval", "0.3")


@pytest.fixture
def worker(tmp_path: Path, master: Process) -> Iterator[Process]:
    process = start_worker(tmp_path, "w1", *FAST, master=master.extra["grpc"])
    wait_heartbeat(master.extra["http"], "w1")  # top's first frame then has real figures
    yield process
    process.kill()


def test_top_shows_the_cluster_and_quits_on_q(
    tmp_path: Path, master: Process, worker: Process
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
        # The worker's row: its CPU (the machine's, it varies), memory and GPU figures.
        row = term.expect(
            rf"w1\s+active\s+\S+\s+{PERCENT}\s+\S+\s+{PERCENT}\s+\S+\s+{PERCENT}\s+0\s+\d"
        )
        plausible_percent(row[1])
        assert plausible_percent(row[2]) > 0  # memory: a real heartbeat
        plausible_percent(row[3])
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
        worker = start_worker(tmp_path, "w9", *FAST, master=second.extra["grpc"])
        try:
            mark = term.mark()
            term.expect(r"● connected", since=mark, timeout=30)
            row = term.expect(rf"w9\s+active\s+\S+\s+{PERCENT}", since=mark)
            plausible_percent(row[1])
        finally:
            worker.kill()
        term.write("\x03")  # Ctrl-C quits too
        assert term.wait() == 0
    finally:
        term.close()
        first.kill()
        if second is not None:
            second.kill()
