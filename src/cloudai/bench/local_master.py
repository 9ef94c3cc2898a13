"""A fresh master process per run, on loopback ephemeral ports.

``LocalMaster`` is ours: ``--insecure`` (plaintext gRPC and HTTP, the simulated workers
pre-authorised with ``--allow-workers-file``) unless ``secure``, where it runs as
installed (mutual TLS, HTTPS/WSS, API tokens) and the workers join (``enrol.py``).
``FloorMaster`` is the do-nothing gRPC server of ``floor_master.py`` (``--target
floor``, always plaintext). Both are a ``ChildServer``: a process that writes a ready
file with its ports.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


class ChildServer:
    """A server child process that writes ``<name>.ready.json`` when it listens."""

    name = "server"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready: dict[str, Any] = {}
        self.log_path = workdir / f"{self.name}.log"
        self.ready_file = workdir / f"{self.name}.ready.json"

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        """Variables set for the child on top of this process's environment."""
        return {}

    def start(self, timeout: float = 30.0) -> None:
        ready_file = self.ready_file
        ready_file.unlink(missing_ok=True)
        env = dict(os.environ)
        env.pop("GRPC_PORT", None)
        env.pop("HTTP_PORT", None)
        env.pop("CLOUDAI_GRPC_SERVER", None)
        env.update(self.environment())
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.workdir,
            )
        deadline = time.monotonic() + timeout
        while not ready_file.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the {self.name} exited with {self.proc.returncode}: {self.log()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"the {self.name} was not ready after {timeout:.0f} s: {self.log()}"
                )
            time.sleep(0.05)
        self.ready = json.loads(ready_file.read_text())

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.ready['grpc_port']}"

    def log(self, tail: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> int | None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return None if proc is None else proc.returncode
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()


class LocalMaster(ChildServer):
    name = "master"

    def __init__(
        self,
        workdir: Path,
        worker_ids: list[str],
        *,
        ws_batch_ms: float | None = None,
        inactivity_timeout: float | None = None,
        extra_args: list[str] | None = None,
        secure: bool = False,
        server: str | None = None,
    ) -> None:
        super().__init__(workdir)
        self.worker_ids = worker_ids
        self.secure = secure
        self.server = server
        self.ws_batch_ms = ws_batch_ms
        self.inactivity_timeout = inactivity_timeout
        self.extra_args = list(extra_args or [])

    def command(self) -> list[str]:
        args = [
            sys.executable,
            "-m",
            "cloudai",
            "--log-level",
            "WARNING",
            "master",
            "--grpc-port",
            "0",
            "--http-port",
            "0",
            "--host",
            "127.0.0.1",
            "--no-cli",
            "--ready-file",
            str(self.ready_file),
            "--data-dir",
            str(self.data_dir),
        ]
        if not self.secure:
            allow = self.workdir / "workers.txt"
            allow.write_text("".join(f"{worker_id}\n" for worker_id in self.worker_ids))
            args += ["--insecure", "--allow-workers-file", str(allow)]
        if self.ws_batch_ms is not None:
            args += ["--ws-batch-ms", str(self.ws_batch_ms)]
        if self.inactivity_timeout is not None:
            args += ["--inactivity-timeout", str(self.inactivity_timeout)]
        return args + self.extra_args

    def environment(self) -> dict[str, str]:
        # The master's gRPC server kind (MasterSettings.grpc_server) from its environment.
        return {} if self.server is None else {"CLOUDAI_GRPC_SERVER": self.server}

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def ca_file(self) -> Path:
        """The cluster CA a secure master created in its data dir."""
        return self.data_dir / "tls" / "ca.pem"

    @property
    def http_base(self) -> str:
        scheme = "https" if self.secure else "http"
        return f"{scheme}://127.0.0.1:{self.ready['http_port']}"

    @property
    def ws_url(self) -> str:
        scheme = "wss" if self.secure else "ws"
        return f"{scheme}://127.0.0.1:{self.ready['http_port']}/ws/telemetry"


class FloorMaster(ChildServer):
    """The floor: a gRPC server that speaks the protocol and does nothing (no WebSocket)."""

    name = "floor"

    def __init__(self, workdir: Path, server: str | None = None) -> None:
        super().__init__(workdir)
        self.server = server or "aio"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "cloudai.bench.floor_master",
            "--ready-file",
            str(self.ready_file),
            "--server",
            self.server,
        ]

    @property
    def ws_url(self) -> str:
        return ""
