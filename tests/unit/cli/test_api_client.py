"""The client's pure parts: URLs, error messages, `--plain` rows, usage errors. (Calls over
HTTP are in tests/integration/cli/test_api_client_http.py.)"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from cloudai.api.models import Task, Worker
from cloudai.cli import admin
from cloudai.cli.api_client import (
    ApiClient,
    ApiError,
    _error_message,
    auth_headers,
    base_url,
    client_ssl_context,
)
from cloudai.cli.main import main
from cloudai.security import pki
from cloudai.settings import ClientSettings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLOUDAI_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("CLOUDAI_URL", raising=False)


def test_base_url() -> None:
    assert base_url("http://m:8080/") == "http://m:8080"
    assert base_url("m:8080") == "https://m:8080"  # HTTPS unless told otherwise
    assert base_url("ws://m:8080") == "http://m:8080"
    assert base_url("wss://m") == "https://m"
    assert base_url(None) == "https://127.0.0.1:8080"


def test_plain_http_needs_no_tls_settings() -> None:
    assert ApiClient("http://m:1", ca_file=Path("/nowhere")).ssl_context is None


def test_an_unreadable_ca_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ApiError, match="does not exist"):
        _ = ApiClient("https://m:1", ca_file=tmp_path / "missing.pem").ssl_context
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(ApiError, match="holds no usable certificate"):
        client_ssl_context(junk)


def test_the_ca_file_is_trusted(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(pki.create_ca().cert_pem)
    context = ApiClient("https://m:1", ca_file=ca).ssl_context
    assert context is not None and context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert len(context.get_ca_certs()) == 1


def test_auth_headers() -> None:
    assert auth_headers("t") == {"Authorization": "Bearer t"}
    assert auth_headers(None) == {} and auth_headers("") == {}


def _local_master(data: Path, token: str | None = "cloudai.local", ca: bool = True) -> None:
    (data / "cloudai" / "tls").mkdir(parents=True)
    if token is not None:
        (data / "cloudai" / "admin.token").write_text(token + "\n")
    if ca:
        (data / "cloudai" / "tls" / "ca.pem").write_text("-")


def test_same_machine_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    data = tmp_path / "data"
    monkeypatch.setenv("XDG_DATA_HOME", str(data))
    settings = ClientSettings.load()
    assert (settings.url, settings.admin_token, settings.ca_file) == (
        "https://127.0.0.1:8080",
        None,
        None,
    )
    _local_master(data)
    settings = ClientSettings.load()
    assert settings.admin_token == "cloudai.local"
    assert settings.ca_file == data / "cloudai" / "tls" / "ca.pem"
    # What is given wins; plain HTTP needs no CA.
    given = ClientSettings.load(admin_token="mine", ca_file=tmp_path / "other.pem")
    assert (given.admin_token, given.ca_file) == ("mine", tmp_path / "other.pem")
    assert ClientSettings.load(url="http://m:1").ca_file is None
    assert ClientSettings.load(url="m:1").ca_file is not None  # https by default
    monkeypatch.setenv("CLOUDAI_ADMIN_TOKEN", "from-env")
    assert ClientSettings.load().admin_token == "from-env"


def test_an_unreadable_token_file_is_no_token(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    monkeypatch.setenv("XDG_DATA_HOME", str(data))
    _local_master(data, token="", ca=False)
    assert ClientSettings.load().admin_token is None
    (data / "cloudai" / "admin.token").write_bytes(b"\xff\xfe")
    assert ClientSettings.load().admin_token is None
    (data / "cloudai" / "admin.token").unlink()
    (data / "cloudai" / "admin.token").mkdir()  # not a file at all
    assert ClientSettings.load().admin_token is None


def test_client_settings_from_env_and_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[client]\nurl = "http://from-file:2"\nadmin_token = "file-token"\nca_file = "~/ca.pem"\n'
    )
    monkeypatch.setenv("CLOUDAI_CONFIG", str(config))
    settings = ClientSettings.load()
    assert (settings.url, settings.admin_token, settings.timeout) == (
        "http://from-file:2",
        "file-token",
        10.0,
    )
    assert settings.ca_file == Path.home() / "ca.pem"
    monkeypatch.setenv("CLOUDAI_URL", "http://elsewhere:1")
    monkeypatch.setenv("CLOUDAI_ADMIN_TOKEN", "env-token")
    settings = ClientSettings.load(url=None, admin_token=None)
    assert (settings.url, settings.admin_token) == ("http://elsewhere:1", "env-token")
    assert ClientSettings.load(url="http://flag:3").url == "http://flag:3"


def test_error_messages() -> None:
    assert _error_message(404, "Not Found", {"error": "unknown worker 'w9'"}) == (
        "unknown worker 'w9'"
    )
    rejected = {"task_id": "t1", "status": "rejected", "message": "no room"}
    assert _error_message(422, "Unprocessable", rejected) == "task t1 rejected: no room"
    assert _error_message(502, "Bad Gateway", "<html>") == "HTTP 502 Bad Gateway"


def test_plain_cells() -> None:
    assert admin.plain_cell(None) == "-"
    assert admin.plain_cell(True) == "true"
    assert admin.plain_cell(1.5) == "1.5"
    assert admin.plain_cell("a\tb\nc\\d\re") == "a\\tb\\nc\\\\d\\re"


def test_plain_rows_sorted_with_unknowns() -> None:
    waiting = Worker(
        worker_id="w2", address="", registered=False, total_cpu=0, total_memory=0,
        total_storage=0, total_gpu=0,
    )  # fmt: skip
    active = waiting.model_copy(
        update={"worker_id": "w1", "is_active": True, "cpu_usage": 5.0, "last_update": 2.0}
    )
    lines = admin.plain_workers([waiting, active]).splitlines()
    assert [line.split("\t")[:4] for line in lines[1:]] == [
        ["w1", "-", "active", "5.0"],
        ["w2", "-", "waiting", "-"],  # no heartbeat yet: usage unknown
    ]
    task = Task(task_id="t", worker_id="w1", status="queued", submitted_at=1.0)
    assert admin.plain_tasks([task]).splitlines()[1].split("\t")[:4] == ["t", "w1", "queued", "-"]


@pytest.mark.parametrize(
    "args",
    [
        ["submit", "w1", "--cmd", "x", "--cpu", "lots"],
        ["submit", "w1", "--cmd", "x", "--mem", "-1"],
        ["tasks", "--status", "bogus"],
        ["tasks", "--json", "--plain"],
        ["status", "--plain"],
        ["register"],
        ["token", "create", "--ttl", "soon"],
        ["token", "create", "--uses", "0"],
        ["token", "revoke"],
        ["token", "list", "--json", "--plain"],
        ["api-token", "create"],
        ["api-token", "create", "--scope", "root"],
        ["login", "--bogus"],
    ],
)
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    assert "usage:" in capsys.readouterr().err
