"""Who a process is to the bus (docs/SCALING.md, "Identity and security"): the credential
it shows NATS, the checks on it, and bus addresses fit for a log (no password in them).

A process may show NATS one of: an NKey seed file (``--bus-nkey``), a credentials file
(``--bus-creds``: JWT and seed, as ``nsc`` writes it), or a user and password or a token
in every ``--bus`` URL (``nats://USER:PASSWORD@HOST:4222``, ``nats://TOKEN@HOST:4222``).
Pure, but for the look at a key file's mode and first line, and ``new_user_nkey``, which
writes a fresh seed (``cloudai bus-nkey``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from cloudai.bus.subjects import bus_servers

CREDENTIALS = "--bus-nkey FILE, --bus-creds FILE, or USER:PASSWORD@ or TOKEN@ in each --bus URL"
"""The credentials a process may give, as the one-line errors name them."""

_USER_SEED = re.compile(r"SU[A-Z2-7]{56}")
"""A user NKey's seed (``SU`` + base32), the one line of a ``--bus-nkey`` file."""


def url_has_credentials(url: str) -> bool:
    """Whether a bus URL carries a user (and password) or a token."""
    return bool(urlsplit(url).username)


def redact_url(url: str) -> str:
    """``url`` without its secret: ``nats://USER:***@HOST:PORT`` or ``nats://***@HOST:PORT``."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    secret = f"{parts.username}:***" if parts.password is not None else "***"
    return parts._replace(netloc=f"{secret}@{host}").geturl()


def shown_servers(servers: list[str]) -> str:
    """The bus addresses, comma-separated, fit for a log line."""
    return ", ".join(redact_url(url) for url in servers)


def check_private_key_file(flag: str, path: Path) -> None:
    """ValueError (one line) unless ``path`` exists and only its owner may read it: the
    file holds the key this process proves its identity to NATS with."""
    try:
        mode = path.stat().st_mode & 0o777
    except OSError as exc:
        raise ValueError(f"cannot read {flag} {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise ValueError(f"{flag} {path} is readable by others (mode {mode:o}); chmod 600 it")


def check_nkey_seed(path: Path) -> None:
    """ValueError (one line) unless ``path`` is private and holds a user NKey seed."""
    check_private_key_file("--bus-nkey", path)
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError as exc:
        raise ValueError(f"cannot read --bus-nkey {path}: {exc.strerror}") from None
    if not _USER_SEED.fullmatch(text):
        raise ValueError(f"--bus-nkey {path} does not hold a user NKey seed (one line SU...)")


def new_user_nkey(path: Path) -> str:
    """Make a NATS user NKey: its seed goes to ``path``, created with mode 0600 (never
    over an existing file: ``FileExistsError``), for ``--bus-nkey``; returns its public
    key (``U...``), the one nats-server's configuration names."""
    import nkeys  # nats-py's own dependency for NKeys (nats-py[nkeys])

    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public: str = nkeys.from_seed(bytearray(seed)).public_key.decode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(seed + b"\n")
    return public


def credential_problem(
    who: str, bus: str | None, *, creds: Path | None, nkey: Path | None, insecure: bool
) -> str | None:
    """Why ``who`` may not connect to ``bus`` with these credentials (one line), or None.

    Secure mode (not ``insecure``) needs a credential: the master trusts what arrives on
    the bus's telemetry and call subjects as coming from a gateway."""
    if not bus:
        return None
    if creds is not None and nkey is not None:
        return "--bus-creds and --bus-nkey: give one of them"
    if insecure or creds is not None or nkey is not None:
        return None
    try:
        servers = bus_servers(bus)
    except ValueError:
        return None  # the bus field's own check says what is wrong with it
    if all(url_has_credentials(url) for url in servers):
        return None
    return (
        f"{who} connects to the bus only with a credential: {CREDENTIALS} "
        "(docs/SCALING.md), or --insecure"
    )
