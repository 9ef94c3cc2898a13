"""A PostgreSQL server that is not there: opening the store fails with a StoreError."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudai.store import StoreError, open_store


def test_unreachable_postgresql_is_a_store_error(tmp_path: Path) -> None:
    # Port 1 on loopback: connection refused at once.
    with pytest.raises(StoreError):
        open_store("postgresql://postgres@127.0.0.1:1/none", tmp_path)
