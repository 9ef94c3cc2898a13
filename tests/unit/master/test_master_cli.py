from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from cloudai.master import cli
from cloudai.master.settings import MasterSettings
from cloudai.settings import SettingsError


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    return parser.parse_args(["master", *argv])


def test_defaults_and_store_flush_interval() -> None:
    default = cli.settings_from_args(parse("--no-cli"))
    assert default.store_flush_interval == MasterSettings().store_flush_interval == 5.0
    assert default.gil_switch_interval == 0.0005 and default.gc_young_interval == 0.1
    assert default.interactive is False
    assert (
        cli.settings_from_args(parse("--store-flush-interval", "0.5")).store_flush_interval == 0.5
    )


@pytest.mark.parametrize(
    ("flag", "setting"),
    [
        ("--store-flush-interval", "store-flush-interval"),
        ("--ws-max-frame-rate", "ws-max-frame-rate"),
    ],
)
@pytest.mark.parametrize("bad", ["0", "-1"])
def test_positive_settings_refuse_other_values(flag: str, setting: str, bad: str) -> None:
    with pytest.raises(SettingsError, match=f"{setting}: Input should be greater than 0"):
        cli.settings_from_args(parse(flag, bad))


def test_a_bad_flag_value_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(parse("--inactivity-timeout", "-5", "--no-cli")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cloudai master: inactivity-timeout:")


def test_non_numbers_are_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse("--store-flush-interval", "soon")
    assert "--store-flush-interval" in capsys.readouterr().err


def test_gc_young_ms() -> None:
    assert cli.settings_from_args(parse("--gc-young-ms", "20")).gc_young_interval == 0.02
    assert cli.settings_from_args(parse("--gc-young-ms", "0")).gc_young_interval == 0.0


def test_ws_max_frame_rate() -> None:
    assert cli.settings_from_args(parse()).ws_max_frame_rate == 40_000.0
    assert cli.settings_from_args(parse("--ws-max-frame-rate", "1000")).ws_max_frame_rate == 1000


def test_flags_override_env_override_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[master]\ngrpc-port = 7001\nhttp_port = 7002\ninactivity_timeout = 12\n")
    monkeypatch.setenv("CLOUDAI_CONFIG", str(config))
    from_file = cli.settings_from_args(parse())
    assert (from_file.grpc_port, from_file.http_port, from_file.inactivity_timeout) == (
        7001,
        7002,
        12.0,
    )
    monkeypatch.setenv("CLOUDAI_GRPC_PORT", "7101")
    monkeypatch.setenv("HTTP_PORT", ":7102")  # the Go master's variable and form
    from_env = cli.settings_from_args(parse())
    assert (from_env.grpc_port, from_env.http_port) == (7101, 7102)
    from_flags = cli.settings_from_args(parse("--grpc-port", "7201", "--http-port", ":7202"))
    assert (from_flags.grpc_port, from_flags.http_port) == (7201, 7202)


def test_allow_worker_flags_and_file(tmp_path: Path) -> None:
    listed = tmp_path / "workers.txt"
    listed.write_text("# comment\nw2=10.0.0.2:50052\n\nw3\n")
    settings = cli.settings_from_args(
        parse("--allow-worker", "w1=127.0.0.1:50052", "--allow-workers-file", str(listed))
    )
    assert settings.allowed_workers == {"w1": "127.0.0.1:50052", "w2": "10.0.0.2:50052", "w3": ""}
    listed.write_text("bad id\n")
    with pytest.raises(SettingsError, match=r"workers\.txt"):
        cli.settings_from_args(parse("--allow-workers-file", str(listed)))


def test_unknown_setting_in_the_file_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[master]\ngrcp_port = 1\n")
    monkeypatch.setenv("CLOUDAI_CONFIG", str(config))
    with pytest.raises(SettingsError, match="grcp-port: unknown setting"):
        cli.settings_from_args(parse())


def test_grpc_server_kind() -> None:
    assert cli.settings_from_args(parse()).grpc_server == "aio"
    assert cli.settings_from_args(parse("--grpc-server", "sync")).grpc_server == "sync"


def test_an_unsupported_database_url_is_one_line_without_its_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.run(parse("--no-cli", "--database-url", "mysql://me:s3cret@db/cloudai")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unsupported database URL scheme 'mysql'" in err
    assert "s3cret" not in err and "mysql://***@db/cloudai" in err


def test_a_bad_bus_address_never_shows_its_password() -> None:
    with pytest.raises(SettingsError) as refused:
        cli.settings_from_args(parse("--insecure", "--bus", "http://me:s3cret@h:4222"))
    assert "s3cret" not in str(refused.value) and "h:4222" in str(refused.value)


def test_task_output_days() -> None:
    days = cli.settings_from_args(parse("--task-output-days", "2"))
    assert days.task_output_retention == 2 * 86_400.0
    assert MasterSettings().task_output_retention == 30 * 86_400.0
