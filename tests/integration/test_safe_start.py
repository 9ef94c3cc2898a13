"""A master that cannot start safely says so in one line and exits 1: a damaged SQLite
store, a data directory another master holds, a busy port. No traceback."""

from __future__ import annotations

import random
import sqlite3
import subprocess
from pathlib import Path

import aiohttp
import pytest

from tests.harness import child_env, cloudai_command, start_master

pytestmark = pytest.mark.fault


def run_master(workdir: Path, *args: str, data_dir: Path | None = None) -> tuple[int, str]:
    """``cloudai master`` that is expected to fail at start: its status and output."""
    proc = subprocess.run(
        cloudai_command(
            "master",
            "--insecure",
            "--host",
            "127.0.0.1",
            "--no-cli",
            "--data-dir",
            str(data_dir or workdir / "data"),
            *args,
        ),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=workdir,
        timeout=60,
    )
    return proc.returncode, proc.stdout + proc.stderr


def the_one_error(output: str) -> str:
    """The output holds exactly one error line and no traceback; that line."""
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if " ERROR " in line or line.startswith("E")]
    assert len(errors) == 1, output
    return errors[0]


def damage_a_middle_page(db: Path) -> int:
    """Write garbage over a live page in the middle of the file; its number."""
    with sqlite3.connect(db) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        assert conn.execute("PRAGMA freelist_count").fetchone()[0] == 0  # every page is live
        assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    assert pages >= 8, f"only {pages} pages: no middle to damage"
    page = pages // 2 + 1  # 1-based, far from the header (page 1)
    garbage = random.Random(12).randbytes(page_size)
    with open(db, "r+b") as f:
        f.seek((page - 1) * page_size)
        f.write(garbage)
    return page


async def test_a_damaged_store_stops_the_master_with_what_to_do(tmp_path: Path) -> None:
    master = start_master(tmp_path)
    try:
        async with aiohttp.ClientSession(base_url=master.extra["http"]) as http:
            for i in range(300):  # some data: a store of a few dozen pages
                body = {
                    "worker_id": f"worker-{i:03d}",
                    "address": f"10.0.{i // 250}.{i % 250}:50052",
                }
                async with http.post("/api/workers", json=body) as r:
                    assert r.status == 201, await r.text()
        assert master.stop() == 0  # stopped cleanly: everything is in the file, no WAL
    finally:
        master.kill()
    db = tmp_path / "data" / "cloudai.db"
    assert not (tmp_path / "data" / "cloudai.db-wal").exists()
    page = damage_a_middle_page(db)

    status, output = run_master(tmp_path)
    assert status == 1, output
    line = the_one_error(output)
    assert "cannot start the master" in line and "damaged" in line
    assert str(db) in line and "restore it from a backup" in line and "move it away" in line
    assert output.strip() == line  # nothing opened, nothing else said
    print(f"page {page} of {db.stat().st_size // 4096} damaged: {line}")

    # The advice works: with the file moved away the master starts, empty.
    db.rename(db.with_name("cloudai.db.damaged"))
    master = start_master(tmp_path, name="master-empty")
    try:
        async with (
            aiohttp.ClientSession(base_url=master.extra["http"]) as http,
            http.get("/api/workers") as r,
        ):
            assert r.status == 200 and await r.json() == []
    finally:
        master.close()


async def test_one_master_per_data_dir_and_busy_ports_are_one_line(tmp_path: Path) -> None:
    master = start_master(tmp_path)
    try:
        # A second master on the same data directory: the holder's pid, before any port.
        status, output = run_master(tmp_path, "--grpc-port", "0", "--http-port", "0")
        assert status == 1, output
        line = the_one_error(output)
        assert f"another master (pid {master.pid})" in line, line
        assert str(tmp_path / "data") in line and "--data-dir" in line
        assert output.strip() == line
        assert (tmp_path / "data" / "master.lock").read_text().strip() == str(master.pid)

        # Busy ports (another data directory): one line each, naming the port.
        grpc_port, http_port = master.ready["grpc_port"], master.ready["http_port"]
        other = tmp_path / "other"
        for args, what in (
            (["--grpc-port", str(grpc_port), "--http-port", "0"], f"gRPC on 127.0.0.1:{grpc_port}"),
            (["--grpc-port", "0", "--http-port", str(http_port)], str(http_port)),
        ):
            status, output = run_master(tmp_path, *args, data_dir=other)
            assert status == 1, output
            line = the_one_error(output)
            assert "cannot start the master" in line and what in line, line
            assert "already in use" in line.lower(), line

        # The first master is untouched.
        async with (
            aiohttp.ClientSession(base_url=master.extra["http"]) as http,
            http.get("/health") as r,
        ):
            assert r.status == 200
    finally:
        master.close()
