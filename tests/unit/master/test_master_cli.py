from __future__ import annotations

import argparse

import pytest

from cloudai.master import cli
from cloudai.master.settings import MasterSettings


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    return parser.parse_args(["master", *argv])


def test_defaults_and_store_flush_interval() -> None:
    default = cli.settings_from_args(parse("--no-cli"))
    assert default.store_flush_interval == MasterSettings().store_flush_interval == 5.0
    assert default.gil_switch_interval == 0.0005 and default.gc_young_interval == 0.1
    assert (
        cli.settings_from_args(parse("--store-flush-interval", "0.5")).store_flush_interval == 0.5
    )


@pytest.mark.parametrize("flag", ["--store-flush-interval", "--ws-max-frame-rate"])
@pytest.mark.parametrize("bad", ["0", "-1", "soon"])
def test_positive_flags_refuse_other_values(
    flag: str, bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse(flag, bad)
    assert flag in capsys.readouterr().err


def test_gc_young_ms() -> None:
    assert cli.settings_from_args(parse("--gc-young-ms", "20")).gc_young_interval == 0.02
    assert cli.settings_from_args(parse("--gc-young-ms", "0")).gc_young_interval == 0.0


def test_ws_max_frame_rate() -> None:
    assert cli.settings_from_args(parse()).ws_max_frame_rate == 40_000.0
    assert cli.settings_from_args(parse("--ws-max-frame-rate", "1000")).ws_max_frame_rate == 1000
