"""Schema migrations: Alembic, run programmatically, scripts shipped in the package.

``upgrade(engine)`` brings the database to the newest revision (``head``); on a
database that is already there it does nothing. Concurrent openers are safe:
the upgrade runs in one transaction, under an advisory lock on PostgreSQL and a
write lock (``BEGIN IMMEDIATE``) on SQLite.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from alembic import command
from alembic.autogenerate.api import AutogenContext
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

from cloudai.store.base import StoreError
from cloudai.store.engine import WRITE_OPTION
from cloudai.store.schema import UTCDateTime

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# pg_advisory_xact_lock key: any constant unique to this application.
_PG_LOCK_KEY = 0x636C6F7564616901  # "cloudai" + 1


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config pointing at the packaged migrations (not the CWD)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships migrations
        raise StoreError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> str:
    """Migrate the database to head; returns the revision it is at."""
    config = alembic_config()
    script = ScriptDirectory.from_config(config)
    with engine.execution_options(**{WRITE_OPTION: True}).begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        before = current_revision(conn)
        if before is not None and not _known(script, before):
            raise StoreError(
                f"the database schema is at revision {before!r}, which this version of"
                " cloudai does not know: it was written by a newer cloudai; upgrade cloudai"
            )
        if before is not None and before == script.get_current_head():
            return before
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
        after = current_revision(conn)
    if after != before:
        log.info("database schema migrated from %s to %s", before or "empty", after)
    assert after is not None
    return after


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Autogenerate hook: write ``UTCDateTime`` columns as plain SQLAlchemy types.

    Keeps generated migrations free of imports from ``schema.py``.
    """
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _known(script: ScriptDirectory, revision: str) -> bool:
    try:
        return script.get_revision(revision) is not None
    except Exception:  # alembic raises several kinds for an unknown revision
        return False
