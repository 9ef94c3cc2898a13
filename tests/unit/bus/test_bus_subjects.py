"""Subject naming on the bus: one token per worker, reversible, per-cluster prefixes."""

from __future__ import annotations

import pytest

from cloudai.bus.subjects import Subjects, bus_servers, escape_token, unescape_token


def test_plain_worker_ids_are_used_as_they_are() -> None:
    subjects = Subjects()
    assert subjects.telemetry("gpu-7") == "cloudai.telemetry.gpu-7"
    assert subjects.worker_of("cloudai.telemetry.gpu-7") == "gpu-7"
    assert subjects.telemetry_all == "cloudai.telemetry.>"


@pytest.mark.parametrize("worker_id", ["node.example.com", "a%2Eb", "x.%", "w:1@rack-2_a"])
def test_every_worker_is_one_token_and_the_mapping_reverses(worker_id: str) -> None:
    subjects = Subjects()
    subject = subjects.telemetry(worker_id)
    token = subject.removeprefix("cloudai.telemetry.")
    assert "." not in token and "*" not in token and ">" not in token
    assert subjects.worker_of(subject) == worker_id
    assert unescape_token(escape_token(worker_id)) == worker_id


def test_distinct_ids_never_share_a_subject() -> None:
    subjects = Subjects()
    ids = ["a.b", "a%2Eb", "a%b", "a%252Eb"]
    assert len({subjects.telemetry(i) for i in ids}) == len(ids)


def test_other_subjects_are_not_telemetry() -> None:
    subjects = Subjects("prod")
    assert subjects.worker_of("cloudai.telemetry.w1") is None
    assert subjects.worker_of("prod.telemetry.") is None
    assert subjects.worker_of("prod.telemetry.a.b") is None
    assert subjects.rpc("RegisterWorker") == "prod.rpc.RegisterWorker"
    assert subjects.sessions == "prod.sessions"
    with pytest.raises(ValueError, match="not forwarded"):
        subjects.rpc("AssignTask")


@pytest.mark.parametrize("prefix", ["", "a b", "x.>", ".x", "*"])
def test_bad_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        Subjects(prefix)


def test_bus_addresses() -> None:
    assert bus_servers("nats://a:4222, tls://b:4222") == ["nats://a:4222", "tls://b:4222"]
    assert bus_servers("127.0.0.1:4222") == ["nats://127.0.0.1:4222"]
    for bad in ("", " , ", "http://x:1"):
        with pytest.raises(ValueError):
            bus_servers(bad)


@pytest.mark.parametrize(
    ("prefix", "gateway_id", "inbox"),
    [
        ("cloudai", "g1", "_INBOX.cloudai.gw.g1"),
        ("prod", "gw-1.example.com", "_INBOX.prod.gw.gw-1%2Eexample%2Ecom"),
        ("cloudai", "gw:1@rack_2", "_INBOX.cloudai.gw.gw:1@rack_2"),
    ],
)
def test_each_gateway_has_an_inbox_of_its_own(prefix: str, gateway_id: str, inbox: str) -> None:
    assert Subjects(prefix).gateway_inbox(gateway_id) == inbox


def test_distinct_gateways_never_share_an_inbox() -> None:
    subjects = Subjects()
    inboxes = [subjects.gateway_inbox(i) for i in ("a.b", "a", "a-b", "a.b.c")]
    assert len(set(inboxes)) == len(inboxes)
    # One token each below <prefix>.gw: the permission <inbox>.> covers that gateway only.
    assert all(i.count(".") == 3 for i in inboxes)


@pytest.mark.parametrize("gateway_id", ["", "a b", "g>", "g*"])
def test_a_gateway_id_that_is_no_subject_token_is_refused(gateway_id: str) -> None:
    with pytest.raises(ValueError, match="gateway id"):
        Subjects().gateway_inbox(gateway_id)
