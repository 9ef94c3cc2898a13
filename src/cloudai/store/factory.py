"""``open_store``: pick the back end for a database URL and open it, schema migrated."""

from __future__ import annotations

import logging
from pathlib import Path

from cloudai.store.base import Store
from cloudai.store.sql_store import SqlStore
from cloudai.store.urls import display_url, resolve_url

log = logging.getLogger(__name__)


def open_store(database_url: str | None, data_dir: Path) -> Store:
    """Open the store and bring its schema up to date.

    ``database_url`` None or empty: SQLite, the file ``cloudai.db`` in ``data_dir``
    (created if missing). ``postgresql://...``: PostgreSQL through psycopg 3.
    Raises ``ValueError`` for an unsupported URL and ``StoreError`` when the
    database cannot be reached or migrated.
    """
    url = resolve_url(database_url, data_dir)
    store = SqlStore(url)
    log.info("store: %s (%s, schema %s)", display_url(url), store.backend, store.schema_revision)
    return store
