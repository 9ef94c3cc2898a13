"""``open_store``: pick the back end for a database URL and open it, schema migrated."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from cloudai.store.base import Store, StoreError
from cloudai.store.engine import sqlite_quick_check
from cloudai.store.sql_store import SqlStore
from cloudai.store.urls import display_url, resolve_url

log = logging.getLogger(__name__)


def check_sqlite_file(path: Path) -> None:
    """Refuse to open a damaged SQLite file (``PRAGMA quick_check``), with one line that
    says what to do: a store that starts silently on a damaged file loses or mixes up
    data later, far from the cause."""
    if not path.is_file():
        return  # a new store
    started = time.monotonic()
    problem = sqlite_quick_check(path)
    log.debug("store %s: quick_check %.2f s", path, time.monotonic() - started)
    if problem is None:
        return
    raise StoreError(
        f"the SQLite store {path} is damaged (quick_check: {problem[:200]}): restore it from"
        f" a backup, or move it away with its -wal and -shm files (mv {path} {path}.damaged)"
        " to start with an empty store"
    )


def open_store(database_url: str | None, data_dir: Path) -> Store:
    """Open the store and bring its schema up to date.

    ``database_url`` None or empty: SQLite, the file ``cloudai.db`` in ``data_dir``
    (created if missing). ``postgresql://...``: PostgreSQL through psycopg 3.
    Raises ``ValueError`` for an unsupported URL and ``StoreError`` when the
    database cannot be reached or migrated, or an SQLite file is damaged.
    """
    url = resolve_url(database_url, data_dir)
    if url.get_backend_name() == "sqlite" and url.database:
        check_sqlite_file(Path(url.database).expanduser())
    store = SqlStore(url)
    log.info("store: %s (%s, schema %s)", display_url(url), store.backend, store.schema_revision)
    return store
