"""`cloudai login` writes the [client] table of the user's config file (the check against
a master is in tests/integration/test_http_auth.py)."""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path

import pytest

from cloudai.cli.login import ConfigError, client_table, user_config_path, write_client_settings
from cloudai.settings import ClientSettings


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "config.toml"
    write_client_settings(path, {"url": "https://m:8080", "admin_token": "cloudai.x.y"})
    assert _mode(path) == 0o600
    assert tomllib.loads(path.read_text()) == {
        "client": {"url": "https://m:8080", "admin_token": "cloudai.x.y"}
    }
    assert [p.name for p in path.parent.iterdir()] == ["config.toml"]  # no temporary left


def test_other_tables_and_settings_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[master]\nhttp_port = 9090\n\n[client]\ntimeout = 3.0\nurl = "http://old:1"\n')
    path.chmod(0o644)
    write_client_settings(path, {"url": "https://new:2", "ca_file": "/etc/ca.pem"})
    assert tomllib.loads(path.read_text()) == {
        "master": {"http_port": 9090},
        "client": {"timeout": 3.0, "url": "https://new:2", "ca_file": "/etc/ca.pem"},
    }
    assert _mode(path) == 0o600  # it holds a token now


def test_a_broken_file_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[client\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        write_client_settings(path, {"url": "x"})
    assert path.read_text() == "[client\n"
    path.write_text("client = 3\n")
    with pytest.raises(ConfigError, match=r"\[client\] must be a table"):
        write_client_settings(path, {"url": "x"})


def test_where_it_writes(tmp_path: Path) -> None:
    assert user_config_path({"CLOUDAI_CONFIG": str(tmp_path / "c.toml")}) == tmp_path / "c.toml"
    xdg = {"XDG_CONFIG_HOME": str(tmp_path)}
    assert user_config_path(xdg) == tmp_path / "cloudai" / "config.toml"
    assert user_config_path({}) == Path.home() / ".config" / "cloudai" / "config.toml"


def test_what_it_keeps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = ClientSettings.load(url="https://m:1", admin_token="t", ca_file=Path("ca.pem"))
    assert client_table(settings) == {
        "url": "https://m:1",
        "admin_token": "t",
        "ca_file": str(tmp_path / "ca.pem"),  # absolute: the file is read from anywhere
    }
    assert client_table(ClientSettings.load(url="http://m:1")) == {"url": "http://m:1"}


def test_written_settings_are_read_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config.toml"
    monkeypatch.setenv("CLOUDAI_CONFIG", str(path))
    write_client_settings(path, {"url": "https://m:1", "admin_token": "t", "ca_file": "/x.pem"})
    settings = ClientSettings.load()
    assert (settings.url, settings.admin_token, settings.ca_file) == (
        "https://m:1",
        "t",
        Path("/x.pem"),
    )
