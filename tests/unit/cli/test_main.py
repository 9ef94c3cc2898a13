"""The `cloudai` entry point: lazy command modules, one-line descriptions."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cloudai.cli import main


def test_help_imports_no_command_module() -> None:
    code = (
        "import sys; from cloudai.cli import main\n"
        "try:\n    main.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('grpc', 'aiohttp', 'alembic', 'sqlalchemy', 'pydantic', 'rich')"
        " if m in sys.modules]\n"
        "print('HEAVY', heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "HEAVY []" in out
    for name in main.COMMANDS:
        assert name in out


def test_a_client_command_does_not_import_the_master() -> None:
    code = (
        "import sys; from cloudai.cli import main\n"
        "main.build_parser('status')\n"
        "print('LOADED', sorted(m for m in sys.modules if m.startswith('cloudai.master')"
        " or m in ('grpc', 'alembic', 'sqlalchemy')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "LOADED []" in out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--log-level", "DEBUG", "status", "--json"], "status"),
        (["--help"], None),
        (["worker", "--id", "x"], "worker"),
        ([], None),
    ],
)
def test_chosen_command(argv: list[str], expected: str | None) -> None:
    assert main.chosen_command(argv) == expected


def test_every_command_has_one_line_of_help_that_matches_its_module() -> None:
    listing = " ".join(main.build_parser(everything=True).format_help().split())
    for name, entry in main.COMMANDS.items():
        assert entry.summary and "\n" not in entry.summary and len(entry.summary) <= 72
        assert f"{name} {entry.summary}" in listing, name
