"""`cloudai bus-nkey FILE`: a seed for --bus-nkey, its public key on stdout."""

from __future__ import annotations

from pathlib import Path

import nkeys
import pytest

from cloudai.bus.auth import check_nkey_seed
from cloudai.cli.main import main


def test_it_writes_a_private_seed_and_prints_its_public_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gateway-1.nk"
    assert main(["bus-nkey", str(path)]) == 0
    out, err = capsys.readouterr()
    public = out.strip()
    assert out.count("\n") == 1 and public.startswith("U") and len(public) == 56
    assert "--bus-nkey" in err and str(path) in err
    assert path.stat().st_mode & 0o777 == 0o600
    check_nkey_seed(path)  # what --bus-nkey accepts
    seed = bytearray(path.read_bytes().strip())
    assert nkeys.from_seed(seed).public_key.decode() == public


def test_it_never_overwrites_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "master.nk"
    path.write_text("keep me\n")
    assert main(["bus-nkey", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and "exists already" in err
    assert path.read_text() == "keep me\n"


def test_a_directory_that_is_not_there_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bus-nkey", str(tmp_path / "nope" / "k.nk")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: cannot write")


def test_two_keys_differ(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["bus-nkey", str(tmp_path / "a.nk")])
    main(["bus-nkey", str(tmp_path / "b.nk")])
    first, second = capsys.readouterr().out.split()
    assert first != second
