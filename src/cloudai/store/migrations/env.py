"""Alembic environment for the cloudai store.

Programmatic use (``cloudai.store.migrate.upgrade``) passes an open connection
in ``config.attributes["connection"]``. From the ``alembic`` command line
(authoring migrations) the URL comes from ``-x url=...`` or the environment
variable ``CLOUDAI_DATABASE_URL``; see docs/STORE.md.
"""

from __future__ import annotations

import os
from logging.config import fileConfig
from pathlib import Path

from alembic import context
from sqlalchemy import Connection
from sqlalchemy.engine import URL

from cloudai.store.engine import make_engine
from cloudai.store.migrate import render_item
from cloudai.store.schema import metadata
from cloudai.store.urls import resolve_url

config = context.config
target_metadata = metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,  # ALTER TABLE that also works on SQLite
        compare_type=True,
        render_item=render_item,
    )


def run_migrations_offline() -> None:
    url = _cli_url()
    context.configure(
        url=url.render_as_string(hide_password=False),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=True,
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(_cli_url())
    try:
        with engine.connect() as conn:
            _configure(conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


def _cli_url() -> URL:
    if config.config_file_name is not None:
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    raw = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get(
        "CLOUDAI_DATABASE_URL"
    )
    if not raw:
        raise SystemExit(
            "give the database: alembic -x url=sqlite:////path/to/cloudai.db ..."
            " (or set CLOUDAI_DATABASE_URL)"
        )
    return resolve_url(raw, data_dir=Path.cwd())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
