"""A real SQLite store whose writes can be made to fail, and a second connection to the
same file (what a master restarted now would load): for the write-ahead tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cloudai.store import Store, StoreError, StoreOperation, open_store
from cloudai.store.sql_store import SqlStore


class BreakableStore(SqlStore):
    """``broken``: every write fails as a full disk would, and is counted in ``refused``."""

    broken: bool = False
    refused: int = 0

    def apply(self, operations: Sequence[StoreOperation]) -> list[object]:
        if self.broken:
            self.refused += 1
            raise StoreError("database error: disk I/O error")
        return super().apply(operations)


def open_breakable(tmp_path: Path) -> BreakableStore:
    """The store in ``tmp_path`` (SQLite), writing until told ``broken``."""
    store = open_store(None, tmp_path)
    assert isinstance(store, SqlStore)
    store.__class__ = BreakableStore
    assert isinstance(store, BreakableStore)
    store.broken, store.refused = False, 0
    return store


def reopen(tmp_path: Path) -> Store:
    """Another connection to the file: what is committed."""
    return open_store(None, tmp_path)
