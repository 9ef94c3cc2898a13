"""The pure subscription logic: parsing, normalising, changing, matching, projecting."""

from __future__ import annotations

import orjson
import pytest

from cloudai.master import subscriptions as subs
from cloudai.master.subscriptions import (
    DEFAULT,
    Change,
    Subscription,
    SubscriptionError,
    WorkerSelector,
    apply_change,
    parse_control,
    parse_query,
    project,
    project_fragment,
    select,
)


def test_no_parameters_is_todays_contract() -> None:
    assert parse_query({}) == DEFAULT
    assert parse_query({"token": "secret", "other": "x"}) == DEFAULT  # not ours: ignored
    assert DEFAULT.is_default and DEFAULT.telemetry_key == (None, None)


def test_query_is_normalised_so_equal_choices_share_a_key() -> None:
    a = parse_query({"workers": "node-7,gpu-*,node-7", "fields": "gpu_usage,cpu_usage"})
    b = parse_query({"workers": " gpu-* , node-7", "fields": "cpu_usage,gpu_usage,"})
    assert a == b and a.telemetry_key == b.telemetry_key
    assert a.workers == ("gpu-*", "node-7") and a.fields == ("cpu_usage", "gpu_usage")
    assert a.topics == {"telemetry"} and not a.is_default


def test_star_means_all() -> None:
    sub = parse_query({"workers": "gpu-*,*", "fields": "*"})
    assert sub.workers is None and sub.fields is None and sub.is_default


def test_topics_from_the_query_are_exactly_what_the_client_gets() -> None:
    sub = parse_query({"topics": "alerts,transitions"})
    assert sub.topics == {"alerts", "transitions"}
    assert not sub.wants_telemetry and sub.telemetry_key is None


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"workers": "bad/id"}, "bad worker id or pattern"),
        ({"workers": "x" * 129}, "bad worker id or pattern"),
        ({"workers": ",".join(f"w{i}" for i in range(65))}, "at most 64"),
        ({"fields": "cpu usage"}, "bad field name"),
        ({"fields": ",".join(f"f{i}" for i in range(33))}, "at most 32"),
        ({"topics": "telemetry,gossip"}, "unknown topic 'gossip'"),
    ],
)
def test_bad_query_parameters_are_one_clear_line(query: dict[str, str], message: str) -> None:
    with pytest.raises(SubscriptionError, match=message) as error:
        parse_query(query)
    assert "\n" not in str(error.value)


def test_control_messages_parse() -> None:
    action, change = parse_control(
        b'{"subscribe": {"workers": ["gpu-*"], "fields": ["cpu_usage"], "topics": ["alerts"]}}'
    )
    assert action == "subscribe"
    assert change == Change(workers=("gpu-*",), fields=("cpu_usage",), topics=("alerts",))
    action, change = parse_control('{"unsubscribe": {"topics": ["alerts"]}}')
    assert action == "unsubscribe" and change == Change(topics=("alerts",))


@pytest.mark.parametrize(
    ("data", "code", "message"),
    [
        (b"hello", "bad_json", "must be a JSON object"),
        (b"[1, 2]", "bad_control", "one JSON object"),
        (b'{"subscribe": {}, "unsubscribe": {}}', "bad_control", "one JSON object"),
        (b'{"reboot": {}}', "bad_control", "unknown control 'reboot'"),
        (b'{"subscribe": ["gpu-*"]}', "bad_subscription", "takes an object"),
        (b'{"subscribe": {"worker": ["a"]}}', "bad_subscription", "unknown key 'worker'"),
        (b'{"subscribe": {"workers": "a"}}', "bad_subscription", "list of strings"),
        (b'{"subscribe": {"workers": [1]}}', "bad_subscription", "list of strings"),
        (b'{"subscribe": {"topics": ["x"]}}', "bad_subscription", "unknown topic"),
        (b" " * (subs.MAX_CONTROL_BYTES + 1), "too_large", "the limit is 8192"),
    ],
)
def test_bad_control_messages(data: bytes, code: str, message: str) -> None:
    with pytest.raises(SubscriptionError, match=message) as error:
        parse_control(data)
    assert error.value.code == code
    frame = orjson.loads(subs.error_frame(error.value))
    assert frame == {"topic": "error", "event": {"error": str(error.value), "code": code}}


def test_subscribe_narrows_all_then_adds_and_unsubscribe_removes() -> None:
    sub = apply_change(DEFAULT, "subscribe", Change(workers=("gpu-*",)))
    assert sub.workers == ("gpu-*",) and sub.fields is None  # the first list replaces "all"
    sub = apply_change(sub, "subscribe", Change(workers=("node-7",), topics=("alerts",)))
    assert sub.workers == ("gpu-*", "node-7") and sub.topics == {"telemetry", "alerts"}
    sub = apply_change(sub, "unsubscribe", Change(workers=("gpu-*",), topics=("telemetry",)))
    assert sub.workers == ("node-7",) and sub.topics == {"alerts"}
    sub = apply_change(sub, "unsubscribe", Change(workers=("*",)))
    assert sub.workers == ()  # nothing
    sub = apply_change(sub, "subscribe", Change(workers=("*",), topics=("telemetry",)))
    assert sub.workers is None and sub.wants_telemetry  # all again
    # Removing one name from "all" changes nothing.
    assert apply_change(DEFAULT, "unsubscribe", Change(fields=("cpu_usage",))) == DEFAULT


def test_subscribe_is_bounded() -> None:
    sub = apply_change(DEFAULT, "subscribe", Change(workers=tuple(f"a{i}" for i in range(60))))
    with pytest.raises(SubscriptionError, match="at most 64"):
        apply_change(sub, "subscribe", Change(workers=tuple(f"b{i}" for i in range(10))))


def test_selector_matches_ids_and_globs() -> None:
    selector = WorkerSelector(("gpu-*", "node-7", "rack[12]-?"))
    assert selector.matches("gpu-01") and selector.matches("node-7")
    assert selector.matches("rack1-a") and selector.matches("rack2-b")
    assert not selector.matches("node-77") and not selector.matches("GPU-01")  # case matters
    assert not selector.matches("rack3-a") and not selector.matches("xgpu-1")
    assert WorkerSelector(None).matches("anything")
    assert not WorkerSelector(()).matches("anything")


def test_projection_keeps_the_id_and_the_objects_key_order() -> None:
    worker = {"worker_id": "w1", "cpu_usage": 1.0, "memory_usage": 2.0, "state": "active"}
    assert list(project(worker, ("state", "cpu_usage"))) == ["worker_id", "cpu_usage", "state"]
    assert project(worker, ("nope",)) == {"worker_id": "w1"}
    assert project(worker, None) == worker
    fragment = orjson.dumps({"w1": worker})[1:-1]
    assert project_fragment(fragment, None) is fragment
    assert orjson.loads(b"{" + project_fragment(fragment, ("cpu_usage",)) + b"}") == {
        "w1": {"worker_id": "w1", "cpu_usage": 1.0}
    }
    chosen = select({"w1": fragment, "x2": b'"x2":{}'}, WorkerSelector(("w*",)), None)
    assert chosen == {"w1": fragment}


def test_acknowledgement_frame_says_the_whole_subscription() -> None:
    sub = Subscription(("gpu-*",), ("cpu_usage",), frozenset({"telemetry", "alerts"}))
    assert orjson.loads(subs.ack_frame(sub)) == {
        "topic": "subscription",
        "event": {"workers": ["gpu-*"], "fields": ["cpu_usage"], "topics": ["alerts", "telemetry"]},
    }
