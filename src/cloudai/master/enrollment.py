"""WorkerEnrollment: a worker joins the cluster with a join token (secure mode).

The worker sends the token, the id it wants and a certificate signing request; the
master checks the request, refuses an id that another live worker holds (naming it),
spends one use of the token, signs a certificate for that id, binds the id to the
certificate's fingerprint and commits all of it to the store before it answers. From
then on only that certificate may register, heartbeat and report results for the id.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from cloudai.api.models import JoinRequest, JoinResponse
from cloudai.master.cluster_admin import AdminError, ErrorKind
from cloudai.master.registry import WorkerRegistry
from cloudai.security import pki
from cloudai.security.credentials import MasterIdentity
from cloudai.security.tokens import JoinRefused
from cloudai.telemetry.manager import TelemetryManager

log = logging.getLogger(__name__)


class JoinTokens(Protocol):
    """What enrollment needs of AccessControl."""

    async def check_join_token(self, text: str, worker_id: str) -> None: ...

    async def redeem_join_token(self, text: str, worker_id: str) -> None: ...


class WorkerEnrollment:
    def __init__(
        self,
        identity: MasterIdentity,
        tokens: JoinTokens,
        registry: WorkerRegistry,
        telemetry: TelemetryManager,
        commit: Callable[[], Awaitable[None]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._identity = identity
        self._tokens = tokens
        self._registry = registry
        self._telemetry = telemetry
        self._commit = commit
        self._clock = clock

    def live_holder(self, worker_id: str) -> str | None:
        """The address of a live worker that holds ``worker_id`` with a certificate."""
        entry = self._registry.get(worker_id)
        if entry is None or entry.cert_fingerprint is None or not entry.session:
            return None
        state = self._telemetry.get_worker_telemetry(worker_id)
        if state is None or not state.is_active:
            return None
        return entry.address or "an unknown address"

    async def join(self, request: JoinRequest, peer: str) -> JoinResponse:
        worker_id = request.worker_id
        try:  # the token first: a stranger learns nothing else (and spends nothing)
            await self._tokens.check_join_token(request.token, worker_id)
        except JoinRefused as exc:
            log.warning("refused a join as %r from %s: %s", worker_id, peer, exc)
            raise AdminError(ErrorKind.UNAUTHORIZED, str(exc)) from None
        try:  # then the request, before a use of the token is spent on it
            cert_pem = self._identity.sign_worker(request.csr_pem.encode(), worker_id)
        except pki.PkiError as exc:
            raise AdminError(ErrorKind.UNPROCESSABLE, str(exc)) from None
        holder = self.live_holder(worker_id)
        if holder is not None:
            raise AdminError(
                ErrorKind.CONFLICT,
                f"worker id {worker_id!r} is held by the live worker at {holder}; stop it "
                f"or unregister it (cloudai unregister {worker_id}) first, or join with "
                "another --id",
            )
        try:
            await self._tokens.redeem_join_token(request.token, worker_id)
        except JoinRefused as exc:
            log.warning("refused a join as %r from %s: %s", worker_id, peer, exc)
            raise AdminError(ErrorKind.UNAUTHORIZED, str(exc)) from None
        fingerprint = pki.fingerprint(pki.load_cert(cert_pem))
        self._registry.bind_certificate(worker_id, fingerprint)
        await self._commit()
        log.info("worker %s joined from %s (certificate %s)", worker_id, peer, fingerprint[:16])
        return JoinResponse(
            certificate_pem=cert_pem.decode(), ca_pem=self._identity.ca_pem.decode()
        )
