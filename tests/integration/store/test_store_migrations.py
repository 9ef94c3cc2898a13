"""Migrations: packaged scripts, found from anywhere, in step with schema.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text

from cloudai.store import SqlStore, Store, StoreError, open_store
from cloudai.store.migrate import MIGRATIONS_DIR, alembic_config, head_revision


def test_migrations_are_found_relative_to_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert MIGRATIONS_DIR.is_absolute()
    assert (MIGRATIONS_DIR / "env.py").is_file()
    monkeypatch.chdir(tmp_path)  # not the repository: nothing found via the CWD
    with open_store(None, tmp_path / "data") as store:
        assert isinstance(store, SqlStore)
        assert store.schema_revision == head_revision()


def test_schema_py_matches_the_migrations(store: Store) -> None:
    """Autogenerate finds nothing to add: schema.py and versions/ agree."""
    assert isinstance(store, SqlStore)
    with store.engine.connect() as conn:
        command.check(alembic_config(conn))


def test_a_schema_newer_than_the_code_is_refused(open_: Callable[[], Store]) -> None:
    store = open_()
    assert isinstance(store, SqlStore)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'ffff_from_the_future'"))
    store.close()
    with pytest.raises(StoreError, match="newer cloudai"):
        open_()


def test_downgrade_and_upgrade_again(store: Store) -> None:
    assert isinstance(store, SqlStore)
    with store.engine.begin() as conn:
        command.downgrade(alembic_config(conn), "base")
    with store.engine.connect() as conn:
        tables = set(conn.dialect.get_table_names(conn))
    assert not {"workers", "tasks", "assignments", "results"} & tables
    store.close()
    with open_store_like(store) as again:
        assert again.list_workers() == []


def open_store_like(store: SqlStore) -> SqlStore:
    return SqlStore(store.engine.url)


def test_autogenerate_writes_plain_types_for_utc_timestamps(tmp_path: Path) -> None:
    """A new UTCDateTime column renders as sa.DateTime(timezone=True), no schema import."""
    from alembic.autogenerate import produce_migrations, render_python_code
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import Column, MetaData, Table

    from cloudai.store.migrate import render_item
    from cloudai.store.schema import UTCDateTime

    meta = MetaData()
    Table("extra", meta, Column("seen_at", UTCDateTime(), nullable=True))
    with open_store(None, tmp_path) as store:
        assert isinstance(store, SqlStore)
        with store.engine.connect() as conn:
            ops = produce_migrations(MigrationContext.configure(conn), meta).upgrade_ops
            code = render_python_code(ops, render_item=render_item)  # as env.py configures
    assert "sa.DateTime(timezone=True)" in code
    assert "UTCDateTime" not in code
