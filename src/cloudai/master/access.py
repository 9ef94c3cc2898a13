"""AccessControl: the master's join tokens and API tokens.

The application service behind ``cloudai token ...``, ``cloudai api-token ...``, the
join request of a new worker, and the token check of every HTTP request.

- Tokens are kept in memory, loaded from the store at start (``load``), so that
  ``authenticate`` (every HTTP request, every WebSocket connection) is a dict lookup
  and a constant-time hash comparison, with no I/O and no await.
- Whatever changes a token is committed to the store (in a thread) before the method
  returns and before the in-memory state says so: an answer of success means it is
  written.
- A join is counted by the store's atomic ``use_join_token``, so a token of N uses
  admits N workers even when joins race, on one master or several sharing a database.
- Only the SHA-256 of a secret is kept; a token's text is shown once, when it is made.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import shlex
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cloudai.api.models import ApiTokenInfo, JoinTokenInfo
from cloudai.identifiers import InvalidId, check_id
from cloudai.master.cluster_admin import AdminError, ErrorKind
from cloudai.security.tokens import (
    ApiTokenRecord,
    JoinRefused,
    JoinTokenRecord,
    Scope,
    TokenFormatError,
    authenticate_api_token,
    check_join,
    format_api_token,
    format_join_token,
    hash_secret,
    new_secret,
    new_token_id,
    parse_join_token,
    secret_matches,
    unknown_join_token,
)
from cloudai.store import DuplicateError, NotFoundError, Store

log = logging.getLogger(__name__)

BOOTSTRAP_NAME = "bootstrap"
"""The name of the admin token the master makes at its first start (``admin.token``)."""

_NEW_ID_ATTEMPTS = 5


def join_command(token: str, master: str, worker_id: str | None = None) -> str:
    """The command line that makes a machine join with ``token`` and register with the
    master's gRPC address ``master`` (HOST:PORT)."""
    words = ["cloudai", "worker", "--master", master, "--join", token]
    if worker_id is not None:
        words += ["--id", worker_id]
    return shlex.join(words)


def _timestamp(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


def join_token_info(record: JoinTokenRecord, now: datetime) -> JoinTokenInfo:
    return JoinTokenInfo(
        token_id=record.token_id,
        created_at=record.created_at.timestamp(),
        expires_at=_timestamp(record.expires_at),
        uses=record.uses,
        max_uses=record.max_uses,
        worker_id=record.worker_id,
        revoked_at=_timestamp(record.revoked_at),
        description=record.description,
        state=record.state(now),
    )


def api_token_info(record: ApiTokenRecord, now: datetime) -> ApiTokenInfo:
    return ApiTokenInfo(
        token_id=record.token_id,
        scope=record.scope,
        name=record.name,
        created_at=record.created_at.timestamp(),
        expires_at=_timestamp(record.expires_at),
        revoked_at=_timestamp(record.revoked_at),
        state=record.state(now),
    )


class AccessControl:
    """Join tokens and API tokens: made, listed, revoked, redeemed, checked."""

    def __init__(
        self,
        store: Store,
        ca_fingerprint: str,
        join_port: Callable[[], int],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._ca_fingerprint = ca_fingerprint
        self._join_port = join_port
        self._clock = clock
        self._join: dict[str, JoinTokenRecord] = {}
        self._api: dict[str, ApiTokenRecord] = {}
        self._api_listeners: list[Callable[[str], None]] = []

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    async def load(self) -> None:
        """Read every token from the store into memory (at start)."""
        join = await asyncio.to_thread(self._store.list_join_tokens)
        api = await asyncio.to_thread(self._store.list_api_tokens)
        self._join = {record.token_id: record for record in join}
        self._api = {record.token_id: record for record in api}

    # -- API tokens ----------------------------------------------------------------

    def add_api_listener(self, listener: Callable[[str], None]) -> None:
        """``listener(token_id)`` after each committed change of an API token (made,
        revoked), once memory says so too (gateways copy the tokens: master/bus_ingest.py)."""
        self._api_listeners.append(listener)

    def _api_changed(self, token_id: str) -> None:
        for listener in self._api_listeners:
            listener(token_id)

    def api_token_records(self) -> list[ApiTokenRecord]:
        """Every API token's record (only the hashes of their secrets), for the gateways
        that check tokens themselves."""
        return list(self._api.values())

    def authenticate(self, text: str) -> Scope | None:
        """The scope of the API token ``text``; None if it is malformed, unknown, wrong,
        expired or revoked. In memory: no I/O."""
        return authenticate_api_token(text, self._api.get, self._now())

    async def create_api_token(
        self, scope: Scope, name: str, ttl: float | None
    ) -> tuple[ApiTokenInfo, str]:
        """A new API token, committed: its description and its text (shown only now)."""
        scope = _scope(scope)
        now = self._now()
        secret = new_secret()
        for _ in range(_NEW_ID_ATTEMPTS):
            record = ApiTokenRecord(
                token_id=self._new_id(),
                secret_hash=hash_secret(secret),
                scope=scope,
                created_at=now,
                name=name,
                expires_at=_expiry(now, ttl),
            )
            try:
                await asyncio.to_thread(self._store.add_api_token, record)
            except DuplicateError:  # an id made by another master sharing the database
                continue
            self._api[record.token_id] = record
            log.info("API token %s (%s) created: %s", record.token_id, scope, name or "no name")
            self._api_changed(record.token_id)
            return api_token_info(record, now), format_api_token(record.token_id, secret)
        raise AdminError(ErrorKind.CONFLICT, "could not find a free token id; try again")

    def list_api_tokens(self) -> list[ApiTokenInfo]:
        """Every API token, revoked and expired ones too, oldest first."""
        now = self._now()
        records = sorted(self._api.values(), key=lambda r: (r.created_at, r.token_id))
        return [api_token_info(record, now) for record in records]

    async def revoke_api_token(self, token_id: str) -> ApiTokenInfo:
        """Revoke the token (committed); it stops working at once. Revoking a revoked
        token changes nothing. ``AdminError`` NOT_FOUND if the id is unknown."""
        try:
            record = await asyncio.to_thread(self._store.revoke_api_token, token_id, self._now())
        except NotFoundError:
            raise AdminError(ErrorKind.NOT_FOUND, f"unknown API token {token_id!r}") from None
        self._api[record.token_id] = record
        log.info("API token %s revoked", record.token_id)
        self._api_changed(record.token_id)
        return api_token_info(record, self._now())

    async def ensure_bootstrap_token(self, path: Path) -> None:
        """Make sure ``path`` holds an admin token this master accepts.

        A file whose token authenticates with scope admin is kept (its mode tightened to
        0600 if need be). Otherwise (no file, or a token this database does not know or
        no longer accepts, e.g. a new database) a new admin token is made, committed, and
        its text written to ``path`` with mode 0600, replacing the file in one step.
        """
        existing = await asyncio.to_thread(_read_token_file, path)
        if existing is not None and self.authenticate(existing) is Scope.ADMIN:
            await asyncio.to_thread(_tighten_mode, path)
            return
        if existing:
            log.warning("%s holds a token this master does not accept: making a new one", path)
        info, text = await self.create_api_token(Scope.ADMIN, BOOTSTRAP_NAME, None)
        try:
            await asyncio.to_thread(_write_private, path, text + "\n")
        except OSError:
            await self.revoke_api_token(info.token_id)  # nobody can know it: do not leave it
            raise
        log.info("admin token %s written to %s", info.token_id, path)

    # -- join tokens ---------------------------------------------------------------

    async def create_join_token(
        self,
        ttl: float | None,
        uses: int | None,
        worker_id: str | None,
        description: str = "",
    ) -> tuple[JoinTokenInfo, str]:
        """A new join token, committed: its description and its text (shown only now).

        ``ttl`` seconds it stays valid (None: no expiry); ``uses``: how many joins it
        admits (None: any number); ``worker_id``: the only id it admits (None: any).
        """
        if uses is not None and uses < 1:
            raise AdminError(ErrorKind.INVALID, f"uses must be at least 1, got {uses}")
        if worker_id is not None:
            try:
                check_id("worker_id", worker_id)
            except InvalidId as exc:
                raise AdminError(ErrorKind.INVALID, str(exc)) from None
        now = self._now()
        expires_at = _expiry(now, ttl)
        secret = new_secret()
        port = self._join_port()
        for _ in range(_NEW_ID_ATTEMPTS):
            record = JoinTokenRecord(
                token_id=self._new_id(),
                secret_hash=hash_secret(secret),
                created_at=now,
                expires_at=expires_at,
                max_uses=uses,
                worker_id=worker_id,
                description=description,
            )
            try:
                await asyncio.to_thread(self._store.add_join_token, record)
            except DuplicateError:  # an id made by another master sharing the database
                continue
            self._join[record.token_id] = record
            log.info("join token %s created", record.token_id)
            text = format_join_token(self._ca_fingerprint, port, record.token_id, secret)
            return join_token_info(record, now), text
        raise AdminError(ErrorKind.CONFLICT, "could not find a free token id; try again")

    def list_join_tokens(self) -> list[JoinTokenInfo]:
        """Every join token, revoked, expired and used-up ones too, oldest first."""
        now = self._now()
        records = sorted(self._join.values(), key=lambda r: (r.created_at, r.token_id))
        return [join_token_info(record, now) for record in records]

    async def revoke_join_token(self, token_id: str) -> JoinTokenInfo:
        """Revoke the token (committed): no worker joins with it any more. Workers that
        joined with it stay. ``AdminError`` NOT_FOUND if the id is unknown."""
        try:
            record = await asyncio.to_thread(self._store.revoke_join_token, token_id, self._now())
        except NotFoundError:
            raise AdminError(ErrorKind.NOT_FOUND, f"unknown join token {token_id!r}") from None
        self._remember_join(record)
        log.info("join token %s revoked", record.token_id)
        return join_token_info(self._join[record.token_id], self._now())

    async def check_join_token(self, text: str, worker_id: str) -> None:
        """Would ``text`` admit ``worker_id`` now? JoinRefused if not; spends nothing."""
        await self._known_join_token(text, worker_id)

    async def _known_join_token(self, text: str, worker_id: str) -> JoinTokenRecord:
        try:
            token = parse_join_token(text)
        except TokenFormatError as exc:
            raise JoinRefused("unknown", str(exc)) from None
        if token.ca_fingerprint != self._ca_fingerprint:
            raise JoinRefused(
                "unknown",
                f"join token {token.token_id} was made by another cluster's master "
                "(its CA fingerprint is not this master's)",
            )
        record = self._join.get(token.token_id)
        if record is None:  # made by another master sharing the database?
            record = await asyncio.to_thread(self._store.get_join_token, token.token_id)
            if record is not None:
                self._remember_join(record)
        if record is None or not secret_matches(token.secret, record.secret_hash):
            raise unknown_join_token(token.token_id)
        check_join(record, worker_id, self._now())  # memory refuses early (never wrongly)
        return record

    async def redeem_join_token(self, text: str, worker_id: str) -> None:
        """Spend one use of the join token ``text`` for ``worker_id``, committed.

        ``JoinRefused`` says why not: unknown (malformed, another cluster's, an unknown
        id or a wrong secret, not told apart), expired, revoked, used up, or bound to
        another worker id.
        """
        record = await self._known_join_token(text, worker_id)
        token_id = record.token_id
        try:
            used = await asyncio.to_thread(
                self._store.use_join_token, token_id, self._now(), worker_id
            )
        except JoinRefused:
            # Another master used or revoked it meanwhile: learn what the store knows.
            current = await asyncio.to_thread(self._store.get_join_token, token_id)
            if current is not None:
                self._remember_join(current)
            raise
        self._remember_join(used)
        log.info(
            "join token %s used by worker %r (%d of %s)",
            used.token_id,
            worker_id,
            used.uses,
            used.max_uses if used.max_uses is not None else "unlimited",
        )

    # -- internals -----------------------------------------------------------------

    def _new_id(self) -> str:
        while True:
            token_id = new_token_id()
            if token_id not in self._join and token_id not in self._api:
                return token_id

    def _remember_join(self, record: JoinTokenRecord) -> None:
        """Keep the newest knowledge of a join token: uses only grow and a revocation
        stays, whatever order concurrent answers from the store arrive in."""
        known = self._join.get(record.token_id)
        if known is not None:
            record = replace(
                record,
                uses=max(record.uses, known.uses),
                revoked_at=record.revoked_at or known.revoked_at,
            )
        self._join[record.token_id] = record


def _scope(scope: Scope | str) -> Scope:
    try:
        return Scope(scope)
    except ValueError:
        raise AdminError(
            ErrorKind.INVALID, f"scope must be one of {', '.join(Scope)}, got {scope!r}"
        ) from None


def _expiry(now: datetime, ttl: float | None) -> datetime | None:
    if ttl is None:
        return None
    if not math.isfinite(ttl) or ttl <= 0:
        raise AdminError(ErrorKind.INVALID, f"ttl must be a positive number of seconds, got {ttl}")
    try:
        return now + timedelta(seconds=ttl)
    except OverflowError:
        raise AdminError(ErrorKind.INVALID, f"ttl {ttl:g} seconds is too long") from None


# -- the bootstrap token's file ------------------------------------------------------------


def _read_token_file(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("cannot read %s (%s): making a new admin token", path, exc)
        return ""


def _tighten_mode(path: Path) -> None:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("%s was readable by others (mode %o): set to 0600", path, mode)
        path.chmod(0o600)


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600: to a new file beside it (created 0600,
    never wider), synced, then renamed over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)  # left by a crash
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
