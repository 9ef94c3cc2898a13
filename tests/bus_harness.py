"""Helpers for tests with gateways and the real NATS server (tests/integration)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cloudai.bus.auth import new_user_nkey
from tests.harness import REPO, Process, start_process, wait_until

NATS = os.environ.get("CLOUDAI_TEST_NATS", "nats://127.0.0.1:4222")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def reachable_nats() -> str:
    """The NATS server's URL; the test is skipped when it is unreachable (failed when CI
    is set: .ci/run starts it)."""
    host, _, port = NATS.removeprefix("nats://").partition(":")
    try:
        socket.create_connection((host, int(port or 4222)), timeout=2).close()
    except OSError as exc:
        message = f"NATS is not reachable at {NATS}: {exc}"
        if in_ci():
            pytest.fail(f"{message} (CI is set: the server must be up)", pytrace=False)
        pytest.skip(message)
    return NATS


def nats_server_binary() -> str:
    """The nats-server program (Debian's package); the test is skipped without it (failed
    when CI is set: .ci/run installs it)."""
    found = shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None
    )
    if found is None:
        message = "nats-server is not installed (Debian package nats-server)"
        if in_ci():
            pytest.fail(f"{message} (CI is set: .ci/run installs it)", pytrace=False)
        pytest.skip(message)
    return found


@dataclass
class NatsServer:
    """A nats-server of one test, on an ephemeral loopback port."""

    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path
    seeds: dict[str, Path] = field(default_factory=dict)  # user -> NKey seed file (0600)
    gateway_ids: dict[str, str] = field(default_factory=dict)  # gateway user -> its --id

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_nats_server(workdir: Path, config: str, name: str = "nats") -> NatsServer:
    """Start nats-server with ``config`` (its file: ``workdir/<name>.conf``) on a free port
    of 127.0.0.1; wait for the ports file it writes once it listens."""
    binary = nats_server_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / f"{name}.conf"
    conf.write_text(config)
    ports_dir = workdir / f"{name}-ports"
    ports_dir.mkdir()
    log_path = workdir / f"{name}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [binary, "-c", str(conf), "-a", "127.0.0.1", "-p", "-1",
             "--ports_file_dir", str(ports_dir)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip

    def ports_file() -> Path | None:
        if proc.poll() is not None:
            raise AssertionError(
                f"nats-server exited with {proc.returncode}:\n{log_path.read_text()}"
            )
        return next(ports_dir.glob("*.ports"), None)

    try:
        found = wait_until(ports_file, 15, "nats-server to listen")
        url = wait_until(lambda: json.loads(found.read_text() or "{}").get("nats"), 5)[0]
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return NatsServer(proc, url, log_path)


AUTH_CONFIG = re.compile(r"```conf\n(# nats-server\.conf.*?)```", re.DOTALL)
PUBLIC_KEY_MARK = "<{user}'s public NKey, U...>"
GATEWAY_ID_MARK = "<gateway's id>"
GATEWAY_ENTRY = re.compile(r'\{ nkey: "<gateway\'s public NKey, U\.\.\.>".*?\} \}', re.DOTALL)
"""The documented user entry of a gateway: copied for each gateway of a test."""


def documented_auth_config() -> str:
    """The nats-server authorization config docs/SCALING.md shows ("Identity and
    security"), with ``<master's public NKey, U...>``-style places for the keys."""
    found = AUTH_CONFIG.search((REPO / "docs" / "SCALING.md").read_text())
    assert found, "docs/SCALING.md shows no nats-server.conf block"
    return found.group(1)


def _new_user(workdir: Path, user: str) -> tuple[Path, str]:
    """A fresh user NKey, as ``cloudai bus-nkey`` makes it: its seed file
    ``workdir/<user>.nk`` (mode 0600) and public key."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"{user}.nk"
    return path, new_user_nkey(path)


def start_auth_nats(workdir: Path, gateways: dict[str, str] | None = None) -> NatsServer:
    """nats-server with the documented users and permissions: a fresh user NKey (its seed
    in ``workdir/<user>.nk``, mode 0600: ``--bus-nkey``) for the master and for each of
    ``gateways`` (user -> gateway id, by default ``{"gateway": "g1"}``), each gateway with
    the documented entry, its key and its id (a ``.`` written ``%2E``, as the docs say)."""
    from cloudai.bus.subjects import escape_token

    gateways = {"gateway": "g1"} if gateways is None else gateways
    config = documented_auth_config()
    seeds = {}
    seeds["master"], public = _new_user(workdir, "master")
    mark = PUBLIC_KEY_MARK.format(user="master")
    assert mark in config, f"the documented config has no place for {mark}"
    config = config.replace(mark, public)
    entry = GATEWAY_ENTRY.search(config)
    assert entry, "the documented config has no gateway entry"
    assert GATEWAY_ID_MARK in entry.group(0), f"its gateway entry has no {GATEWAY_ID_MARK}"
    entries = []
    for user, gateway_id in gateways.items():
        seeds[user], public = _new_user(workdir, user)
        entries.append(
            entry.group(0)
            .replace(PUBLIC_KEY_MARK.format(user="gateway"), public)
            .replace(GATEWAY_ID_MARK, escape_token(gateway_id))
        )
    config = config[: entry.start()] + "\n    ".join(entries) + config[entry.end() :]
    server = start_nats_server(workdir, config, "nats-auth")
    server.seeds = seeds
    server.gateway_ids = dict(gateways)
    return server


def bus_prefix() -> str:
    """Subjects of this test only (other runs may share the NATS server)."""
    return f"t{uuid.uuid4().hex[:12]}"


def start_gateway(
    workdir: Path, name: str, bus: str, prefix: str, grpc_port: int = 0, ws: bool = True
) -> Process:
    args = ["gateway", "--insecure", "--id", name, "--bus", bus, "--host", "127.0.0.1"]
    args += ["--grpc-port", str(grpc_port)]
    if ws:
        args += ["--ws-port", "0"]
    gateway = start_process(args, workdir, name, CLOUDAI_BUS_PREFIX=prefix)
    gateway.extra["grpc"] = f"127.0.0.1:{gateway.ready['grpc_port']}"
    if gateway.ready.get("http_port"):
        gateway.extra["ws"] = f"ws://127.0.0.1:{gateway.ready['http_port']}"
    return gateway
