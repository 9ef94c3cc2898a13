"""Choosing the back end from a database URL; SQLite connection settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from cloudai.store import SqlStore, open_store
from cloudai.store.urls import display_url, resolve_url


def test_default_is_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    url = resolve_url(None, tmp_path / "d")
    assert url.drivername == "sqlite"
    assert url.database == str(tmp_path / "d" / "cloudai.db")
    assert resolve_url("", tmp_path) == resolve_url(None, tmp_path)


@pytest.mark.parametrize(
    "given",
    [
        "postgresql://u:secret@db.example:5433/cloudai",
        "postgres://u:secret@db.example:5433/cloudai",
        "postgresql+psycopg://u:secret@db.example:5433/cloudai",
    ],
)
def test_postgresql_urls_use_psycopg3(given: str, tmp_path: Path) -> None:
    url = resolve_url(given, tmp_path)
    assert url.drivername == "postgresql+psycopg"
    assert (url.host, url.port, url.database, url.password) == (
        "db.example",
        5433,
        "cloudai",
        "secret",
    )
    assert "secret" not in display_url(url)


def test_sqlite_url_names_a_file(tmp_path: Path) -> None:
    url = resolve_url(f"sqlite:///{tmp_path}/x.db", Path("/unused"))
    assert url.database == f"{tmp_path}/x.db"


@pytest.mark.parametrize(
    "bad", ["mysql://u@h/db", "sqlite://", "sqlite:///:memory:", "not a url", "://"]
)
def test_unsupported_urls_are_refused(bad: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        resolve_url(bad, tmp_path)


def test_sqlite_pragmas(tmp_path: Path) -> None:
    with open_store(None, tmp_path / "new" / "dir") as store:
        assert isinstance(store, SqlStore)
        assert store.backend == "sqlite"
        assert (tmp_path / "new" / "dir" / "cloudai.db").is_file()
        with store.engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
            assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 10_000
