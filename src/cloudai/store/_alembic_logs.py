"""A log filter that drops Alembic's routine chatter (keeps "Running upgrade ...")."""

from __future__ import annotations

import logging

_NOISE = ("Context impl", "Will assume", "setup plugin")


class QuietAlembic(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_NOISE)


def install() -> None:
    for name in ("alembic.runtime.migration", "alembic.runtime.plugins"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, QuietAlembic) for f in logger.filters):
            logger.addFilter(QuietAlembic())


install()
