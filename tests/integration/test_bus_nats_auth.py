"""The bus with authentication (docs/SCALING.md, "Identity and security"): a nats-server
of this test with the users and permissions the docs show, an NKey per user. What the
master and a gateway do on the bus works with those permissions; what they must not do,
and a connection without a known credential, is refused by the server: a gateway reads
the answers to its own calls only (its inbox). Credentials in a ``--bus`` URL never reach
a log."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import nats
import nkeys
import pytest
from nats.errors import Error as NatsError

from cloudai.bus.base import BusUnavailable, Delivery
from cloudai.bus.nats_bus import NatsBus
from cloudai.bus.subjects import MASTER_QUEUE, Subjects
from tests.bus_harness import NatsServer, start_auth_nats, start_nats_server
from tests.harness import async_wait_until, start_process

pytestmark = pytest.mark.integration

SUBJECTS = Subjects()  # the documented config is for the default prefix, "cloudai"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    started = start_auth_nats(tmp_path / "nats")
    yield started
    started.close()


def bus(server: NatsServer, user: str, name: str = "", gateway_id: str = "") -> NatsBus:
    """``user``'s connection; a gateway's with its inbox (``gateway_id``: as another id)."""
    gateway_id = gateway_id or server.gateway_ids.get(user, "")
    inbox = SUBJECTS.gateway_inbox(gateway_id) if gateway_id else None
    return NatsBus(
        [server.url], name=name or f"test-{user}", nkey=server.seeds[user], inbox_prefix=inbox
    )


class Inbox:
    """What a subscription received, in order."""

    def __init__(self) -> None:
        self.data: list[bytes] = []

    async def put(self, msg: Delivery) -> None:
        self.data.append(msg.data)


async def test_the_documented_permissions_carry_the_traffic_and_refuse_the_rest(
    server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cloudai.bus.nats_bus")
    master, gateway, dashboards = (
        bus(server, "master"),
        bus(server, "gateway"),
        bus(server, "gateway", "test-gateway-ws"),
    )
    for each in (master, gateway, dashboards):
        await each.connect()
    assert "bus: connected (nats://127.0.0.1:" in caplog.text
    try:
        # The master answers calls (request/reply through the gateway's inbox) and takes
        # telemetry.
        async def answer(msg: Delivery) -> None:
            await master.publish(msg.reply, b"answer to " + msg.data)

        telemetry, on_gateway, sessions = Inbox(), Inbox(), Inbox()
        await master.subscribe(SUBJECTS.rpc("RegisterWorker"), answer, queue=MASTER_QUEUE)
        await master.subscribe(SUBJECTS.telemetry_all, telemetry.put)
        await dashboards.subscribe(SUBJECTS.telemetry_all, on_gateway.put)
        await dashboards.subscribe(SUBJECTS.sessions, sessions.put)
        for each in (master, dashboards):
            await each.flush()
        reply = await gateway.request(SUBJECTS.rpc("RegisterWorker"), b"w1", timeout=5)
        assert reply == b"answer to w1"
        await gateway.publish(SUBJECTS.telemetry("w1"), b"heartbeat")
        await async_wait_until(lambda: telemetry.data and on_gateway.data, 5, "telemetry")
        assert telemetry.data == on_gateway.data == [b"heartbeat"]
        assert master.refused == gateway.refused == dashboards.refused == 0

        # A gateway may not speak for the master, nor take the master's calls.
        await gateway.publish(SUBJECTS.sessions, b"reset forged by a gateway")
        await async_wait_until(lambda: gateway.refused == 1, 5, "the publish refused")
        await gateway.subscribe(f"{SUBJECTS.prefix}.rpc.>", Inbox().put)
        await async_wait_until(lambda: gateway.refused == 2, 5, "the subscription refused")
        # The master may not publish telemetry as if a gateway had received it.
        await master.publish(SUBJECTS.telemetry("w2"), b"forged by the master")
        await async_wait_until(lambda: master.refused == 1, 5, "the master's publish refused")
        await master.publish(SUBJECTS.sessions, b"reset")
        await gateway.publish(SUBJECTS.telemetry("w1"), b"next heartbeat")
        await async_wait_until(lambda: sessions.data and len(telemetry.data) == 2, 5, "last")
        assert sessions.data == [b"reset"]  # not the gateway's forged one
        assert telemetry.data == [b"heartbeat", b"next heartbeat"]
        violations = [
            r.getMessage().lower() for r in caplog.records if r.levelno == logging.WARNING
        ]
        assert any(
            'permissions violation for publish to "cloudai.sessions"' in m for m in violations
        ), violations
        assert any(
            'permissions violation for subscription to "cloudai.rpc.>"' in m for m in violations
        ), violations
    finally:
        for each in (master, gateway, dashboards):
            await each.close()


@pytest.fixture
def two_gateways(tmp_path: Path) -> Iterator[NatsServer]:
    started = start_auth_nats(
        tmp_path / "nats", {"gateway-a": "g1", "gateway-b": "gw-b.example.com"}
    )
    yield started
    started.close()


async def test_a_gateway_reads_the_answers_to_its_own_calls_only(
    two_gateways: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cloudai.bus.nats_bus")
    server = two_gateways
    b_inbox = SUBJECTS.gateway_inbox("gw-b.example.com")
    assert b_inbox == "_INBOX.cloudai.gw.gw-b%2Eexample%2Ecom"
    master, a, b = bus(server, "master"), bus(server, "gateway-a"), bus(server, "gateway-b")
    # Gateway A's user, listening for what it may not read.
    spy = bus(server, "gateway-a", "test-spy")
    # Gateway A's user, run with B's id (and so B's inbox), and with NATS's own inbox.
    as_b = bus(server, "gateway-a", "test-as-b", gateway_id="gw-b.example.com")
    plain = NatsBus([server.url], name="test-plain", nkey=server.seeds["gateway-a"])
    every = (master, a, b, spy, as_b, plain)
    for each in every:
        await each.connect()
    try:

        async def answer(msg: Delivery) -> None:
            await master.publish(msg.reply, b"answer to " + msg.data)

        await master.subscribe(SUBJECTS.rpc("Session"), answer, queue=MASTER_QUEUE)
        await master.flush()
        seen = Inbox()
        await spy.subscribe(f"{b_inbox}.>", seen.put)
        await async_wait_until(lambda: spy.refused == 1, 5, "B's inbox refused to A's user")
        await spy.subscribe("_INBOX.>", seen.put)
        await async_wait_until(lambda: spy.refused == 2, 5, "_INBOX.> refused to A's user")

        assert await a.request(SUBJECTS.rpc("Session"), b"from a", timeout=5) == b"answer to from a"
        assert await b.request(SUBJECTS.rpc("Session"), b"from b", timeout=5) == b"answer to from b"
        await spy.flush()
        assert seen.data == []
        assert master.refused == a.refused == b.refused == 0
        violations = [
            r.getMessage().lower() for r in caplog.records if r.levelno == logging.WARNING
        ]
        assert any(
            f'permissions violation for subscription to "{b_inbox}.>"'.lower() in m
            for m in violations
        ), violations
        assert any(
            'permissions violation for subscription to "_inbox.>"' in m for m in violations
        ), violations

        # A gateway whose user is not its id's (or a client on NATS's inbox) gets no
        # answer: the server refuses its inbox, and its error line says so.
        for wrong, inbox in ((as_b, b_inbox), (plain, "_INBOX")):
            with pytest.raises(BusUnavailable) as refused:
                await wrong.request(SUBJECTS.rpc("Session"), b"lost", timeout=2)
            assert str(refused.value) == (
                f"no answer on the bus: it refused this process's subscription to {inbox}.> "
                "(its NATS user's permissions, docs/SCALING.md)"
            )
    finally:
        for each in every:
            await each.close()


async def test_a_connection_without_a_known_credential_is_refused(
    server: NatsServer, tmp_path: Path
) -> None:
    # nats-py itself: the server answers the CONNECT with an authorization violation.
    with pytest.raises(NatsError, match="Authorization Violation"):
        await nats.connect(server.url, allow_reconnect=False, connect_timeout=5)
    # Through NatsBus: one line that says so.
    refused = "refused this process \\(authorization violation"
    with pytest.raises(BusUnavailable, match=refused):
        await NatsBus([server.url]).connect()
    # An NKey the server does not know (its seed file well kept: that is not enough).
    stranger = tmp_path / "stranger.nk"
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    stranger.write_bytes(seed + b"\n")
    stranger.chmod(0o600)
    with pytest.raises(BusUnavailable, match=refused):
        await NatsBus([server.url], nkey=stranger).connect()


async def test_credentials_in_the_url_work_and_are_never_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="cloudai.bus")
    password, token = "pw-s3cret-1", "tok-s3cret-2"
    users = start_nats_server(
        tmp_path / "users",
        'authorization { users = [ { user: "gw", password: "' + password + '" } ] }\n',
    )
    tokens = start_nats_server(
        tmp_path / "tokens", 'authorization { token: "' + token + '" }\n', "nats-token"
    )
    try:
        host = users.url.removeprefix("nats://")
        with_password = NatsBus([f"nats://gw:{password}@{host}"])
        await with_password.connect()
        await with_password.close()
        with_token = NatsBus([tokens.url.replace("nats://", f"nats://{token}@")])
        await with_token.connect()
        await with_token.close()
        with pytest.raises(BusUnavailable, match="authorization violation") as wrong:
            await NatsBus([f"nats://gw:not-{password}@{host}"]).connect()
        assert f"nats://gw:***@{host}" in str(wrong.value)
        assert f"bus: connected (nats://gw:***@{host})" in caplog.text
        assert "bus: connected (nats://***@127.0.0.1:" in caplog.text
        assert password not in caplog.text + str(wrong.value)
        assert token not in caplog.text

        # A gateway process, in secure mode as far as the bus goes: the password is its
        # credential, and its log shows the URL without it.
        gateway = await asyncio.to_thread(
            start_process,
            ["gateway", "--insecure", "--id", "g-pw", "--bus", f"nats://gw:{password}@{host}",
             "--host", "127.0.0.1", "--grpc-port", "0"],
            tmp_path,
            "gateway",
        )  # fmt: skip
        try:
            assert f"bus: connected (nats://gw:***@{host})" in gateway.log()
        finally:
            gateway.close()
        assert password not in gateway.log()
    finally:
        users.close()
        tokens.close()
