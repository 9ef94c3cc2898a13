"""GET /metrics on a real master, scraped by a real Prometheus server.

A secure master (HTTPS, tokens) with a joined worker; an API token of scope ``read``
for Prometheus, given as it gives one (``authorization: credentials_file``); Debian's
``prometheus`` binary scraping every second until its query API returns the worker's
``cloudai_worker_up``. ``promtool check metrics`` reads the real exposition. In CI a
missing ``prometheus``/``promtool`` fails the test (``.ci/run`` installs the package);
elsewhere the test is skipped with the reason.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import socket
import ssl
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cloudai.security.tokens import Scope
from tests.harness import Process, admin_client, start_master, start_worker, wait_until

WORKER = "w-prom"


def binary(name: str) -> str:
    """The path of ``name`` (from the Debian package prometheus); CI: must be there."""
    found = shutil.which(name) or (
        f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None
    )
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is missing: .ci/run installs the Debian package prometheus")
        pytest.skip(f"{name} is not installed (Debian package prometheus)")
    return found


@dataclass
class Cluster:
    master: Process
    worker: Process
    read_token: str
    url: str
    tls: ssl.SSLContext

    def get(
        self, path: str, token: str | None = None, **headers: str
    ) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) of a GET on the master's HTTP port."""
        request = urllib.request.Request(self.url + path, headers=headers)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=10, context=self.tls) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("prometheus")
    master = start_master(tmp, secure=True)
    worker: Process | None = None
    try:
        admin = admin_client(master)
        read_token = admin.create_api_token(Scope.READ, "prometheus").token
        join = admin.create_join_token(uses=1, worker_id=WORKER)
        worker = start_worker(tmp, WORKER, master=master.extra["grpc"], join=join.token)
        tls = ssl.create_default_context(cafile=master.extra["ca_file"])
        yield Cluster(master, worker, read_token, master.extra["http"], tls)
    finally:
        if worker is not None:
            worker.close()
        master.close()


def worker_is_up(cluster: Cluster) -> bytes | None:
    status, _, body = cluster.get("/metrics", cluster.read_token)
    assert status == 200, body
    return body if f'cloudai_worker_up{{worker_id="{WORKER}"}} 1.0'.encode() in body else None


def test_metrics_need_a_read_token_health_stays_open(cluster: Cluster) -> None:
    status, headers, body = cluster.get("/metrics")
    assert status == 401
    assert headers.get("WWW-Authenticate") == "Bearer"
    assert "error" in json.loads(body)
    status, _, _ = cluster.get("/metrics", "cloudai-not-a-token")
    assert status == 401
    status, headers, body = cluster.get("/metrics", cluster.read_token)
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert b"# TYPE cloudai_worker_up gauge" in body
    status, _, _ = cluster.get("/health")
    assert status == 200
    # As Prometheus asks for it: gzip.
    status, headers, zipped = cluster.get(
        "/metrics", cluster.read_token, **{"Accept-Encoding": "gzip"}
    )
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert b"# TYPE cloudai_worker_up gauge" in gzip.decompress(zipped)


def test_the_worker_shows_up_and_promtool_accepts_the_exposition(cluster: Cluster) -> None:
    body = wait_until(lambda: worker_is_up(cluster), 30, f"{WORKER} up in /metrics")
    for name in (
        "cloudai_worker_cpu_usage_percent",
        "cloudai_worker_memory_usage_percent",
        "cloudai_worker_running_tasks",
        "cloudai_heartbeats_accepted_total",
        "cloudai_event_loop_lag_seconds_bucket",
        "cloudai_store_write_lag_seconds",
        'cloudai_workers{state="active"}',
        'cloudai_tasks{status="queued"}',
        'cloudai_history_rows_written_total{tier="raw"}',
    ):
        assert name.encode() in body, name
    done = subprocess.run(
        [binary("promtool"), "check", "metrics"], input=body, capture_output=True, timeout=60
    )
    assert done.returncode == 0, (done.stdout, done.stderr)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prometheus_config(cluster: Cluster, tmp: Path) -> Path:
    token_file = tmp / "cloudai.token"
    token_file.write_text(cluster.read_token)
    token_file.chmod(0o600)
    target = cluster.url.removeprefix("https://")
    config = tmp / "prometheus.yml"
    config.write_text(
        f"""\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: cloudai
    scheme: https
    tls_config:
      ca_file: {cluster.master.extra["ca_file"]}
    authorization:
      type: Bearer
      credentials_file: {token_file}
    static_configs:
      - targets: ["{target}"]
"""
    )
    return config


def query(port: int, promql: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            answer = json.loads(response.read())
    except (urllib.error.URLError, ConnectionError):
        return []  # not listening yet
    assert answer["status"] == "success", answer
    return list(answer["data"]["result"])


def test_a_real_prometheus_scrapes_the_master(cluster: Cluster, tmp_path: Path) -> None:
    prometheus = binary("prometheus")
    wait_until(lambda: worker_is_up(cluster), 30, f"{WORKER} up in /metrics")
    config = prometheus_config(cluster, tmp_path)
    checked = subprocess.run(
        [binary("promtool"), "check", "config", str(config)], capture_output=True, timeout=60
    )
    assert checked.returncode == 0, (checked.stdout, checked.stderr)
    port = free_port()
    log_path = tmp_path / "prometheus.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                prometheus,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:

        def worker_series() -> list[dict[str, Any]] | None:
            if process.poll() is not None:
                raise AssertionError(f"prometheus exited:\n{log_path.read_text()}")
            series = query(port, f'cloudai_worker_up{{worker_id="{WORKER}"}}')
            return [s for s in series if s["value"][1] == "1"] or None

        series = wait_until(worker_series, 60, "Prometheus to scrape the worker's series")
        assert series[0]["metric"]["job"] == "cloudai"
        (target,) = query(port, 'up{job="cloudai"}')
        assert target["value"][1] == "1"  # the scrape itself succeeds (TLS and the token)
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_insecure_master_serves_metrics_without_a_token(tmp_path: Path) -> None:
    master = start_master(tmp_path)
    try:
        with urllib.request.urlopen(master.extra["http"] + "/metrics", timeout=10) as response:
            assert response.status == 200
            assert b"cloudai_heartbeats_accepted_total 0.0" in response.read()
    finally:
        master.close()
