"""Worker and task ids: one rule for the wire (``validation``), the API models and the
settings. No protobuf import here, so that a client command starts fast."""

from __future__ import annotations

import re

MAX_ID_LENGTH = 128
ID_RULE = r"[A-Za-z0-9][A-Za-z0-9._:@-]*"
ID_PATTERN = f"^{ID_RULE}$"
_ID_RE = re.compile(ID_RULE)


class InvalidId(ValueError):
    """An id that breaks the rule; the text says which part of it."""


def check_id(kind: str, value: str) -> str:
    """``value`` if it is a valid id; InvalidId saying which rule it breaks."""
    if not value:
        raise InvalidId(f"{kind} must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidId(f"{kind} is {len(value)} characters long; the limit is {MAX_ID_LENGTH}")
    if not _ID_RE.fullmatch(value):
        raise InvalidId(
            f"{kind} {value[:40]!r} has invalid characters: use letters, digits and . _ : @ -"
            " and start with a letter or digit"
        )
    return value
