"""What a telemetry stream client asked for: workers, fields and topics. Pure; no I/O.

A client of ``/ws/telemetry`` chooses, at connect (query parameters) and later (JSON
control messages):

- ``workers``: worker ids or glob patterns (``gpu-*``, ``node-[0-9]``); default: all;
- ``fields``: which keys of each worker's object it gets (``worker_id`` always comes);
  default: all;
- ``topics``: ``telemetry`` (the worker objects, the default), and the event topics
  ``transitions``, ``alerts`` and ``tasks`` (opt-in).

A ``Subscription`` is normalised (sorted, deduplicated, ``*`` meaning all), so that two
clients asking for the same workers and fields share one ``TelemetryKey`` and the hub
encodes their frame once per tick. Everything a client sends is bounded (patterns,
fields, their length, the control message's size) and every mistake is a
``SubscriptionError`` whose text is one line for a person.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

TELEMETRY = "telemetry"
TRANSITIONS = "transitions"
ALERTS = "alerts"
TASKS = "tasks"
EVENT_TOPICS = frozenset({TRANSITIONS, ALERTS, TASKS})
TOPICS = frozenset({TELEMETRY}) | EVENT_TOPICS
DEFAULT_TOPICS = frozenset({TELEMETRY})

MAX_PATTERNS = 64  # worker ids/patterns in one subscription
MAX_FIELDS = 32
MAX_PATTERN_LENGTH = 128  # a worker id is at most 128 characters
MAX_CONTROL_BYTES = 8 * 1024  # one control message

ALL = "*"
_PATTERN = re.compile(r"[A-Za-z0-9._:@*?\[\]!-]{1,128}")  # MAX_PATTERN_LENGTH
_GLOB_CHARS = frozenset("*?[")
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
ALWAYS_SENT_FIELD = "worker_id"  # every projected worker object keeps its id

Selection = tuple[str, ...] | None  # None: all
TelemetryKey = tuple[Selection, Selection]  # (workers, fields), normalised


class SubscriptionError(ValueError):
    """A subscription or control message that cannot be honoured; one line of text."""

    def __init__(self, message: str, code: str = "bad_subscription") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Subscription:
    """A client's normalised choice. ``None`` for workers or fields: all of them."""

    workers: Selection = None
    fields: Selection = None
    topics: frozenset[str] = DEFAULT_TOPICS

    @property
    def wants_telemetry(self) -> bool:
        return TELEMETRY in self.topics

    @property
    def is_default(self) -> bool:
        """Today's contract: every worker, every field, telemetry only."""
        return self.workers is None and self.fields is None and self.topics == DEFAULT_TOPICS

    @property
    def telemetry_key(self) -> TelemetryKey | None:
        """What decides the telemetry frames (None: no telemetry): clients with equal
        keys get the same bytes."""
        if not self.wants_telemetry:
            return None
        return (self.workers, self.fields)

    def to_json(self) -> dict[str, Any]:
        return {
            "workers": None if self.workers is None else list(self.workers),
            "fields": None if self.fields is None else list(self.fields),
            "topics": sorted(self.topics),
        }


DEFAULT = Subscription()


@dataclass(frozen=True, slots=True)
class Change:
    """The body of one ``subscribe`` or ``unsubscribe``: None where it says nothing."""

    workers: tuple[str, ...] | None = None
    fields: tuple[str, ...] | None = None
    topics: tuple[str, ...] | None = None


# -- parsing ---------------------------------------------------------------------------------


def _names(value: Any, what: str) -> list[str]:
    """A list of strings from JSON (a list) or a query parameter (comma-separated)."""
    if isinstance(value, str):
        items = [part.strip() for part in value.split(",")]
        return [item for item in items if item]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    raise SubscriptionError(f"{what} must be a list of strings")


def _workers(value: Any) -> tuple[str, ...]:
    items = _names(value, "workers")
    if len(items) > MAX_PATTERNS:
        raise SubscriptionError(f"at most {MAX_PATTERNS} worker ids or patterns, got {len(items)}")
    for item in items:
        if not _PATTERN.fullmatch(item):
            raise SubscriptionError(
                f"bad worker id or pattern {item[:40]!r}: 1..{MAX_PATTERN_LENGTH} characters "
                "of A-Z a-z 0-9 . _ : @ - and the glob characters * ? [ ] !"
            )
    return tuple(sorted(set(items)))


def _fields(value: Any) -> tuple[str, ...]:
    items = _names(value, "fields")
    if len(items) > MAX_FIELDS:
        raise SubscriptionError(f"at most {MAX_FIELDS} fields, got {len(items)}")
    for item in items:
        if item != ALL and not _FIELD.fullmatch(item):
            raise SubscriptionError(f"bad field name {item[:40]!r}")
    return tuple(sorted(set(items)))


def _topics(value: Any) -> tuple[str, ...]:
    items = _names(value, "topics")
    unknown = sorted(set(items) - TOPICS)
    if unknown:
        raise SubscriptionError(
            f"unknown topic {unknown[0][:40]!r}; topics: {', '.join(sorted(TOPICS))}"
        )
    return tuple(sorted(set(items)))


def _selection(items: tuple[str, ...]) -> Selection:
    """``*`` among the items means all (None)."""
    return None if ALL in items else items


def parse_query(query: Mapping[str, str]) -> Subscription:
    """The subscription of ``?workers=a,b-*&fields=cpu_usage&topics=telemetry,alerts``.

    Other parameters (``token``...) are not ours and are ignored. No parameter: DEFAULT."""
    workers = fields = None
    topics = DEFAULT_TOPICS
    if "workers" in query:
        workers = _selection(_workers(query["workers"]))
    if "fields" in query:
        fields = _selection(_fields(query["fields"]))
    if "topics" in query:
        topics = frozenset(_topics(query["topics"]))
    return Subscription(workers, fields, topics)


def parse_control(data: str | bytes) -> tuple[str, Change]:
    """``{"subscribe": {...}}`` or ``{"unsubscribe": {...}}`` -> (action, change)."""
    if len(data) > MAX_CONTROL_BYTES:
        raise SubscriptionError(
            f"control message of {len(data)} bytes; the limit is {MAX_CONTROL_BYTES}",
            "too_large",
        )
    try:
        message = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise SubscriptionError("a control message must be a JSON object", "bad_json") from None
    if not isinstance(message, dict) or len(message) != 1:
        raise SubscriptionError(
            'a control message is one JSON object: {"subscribe": {...}} or {"unsubscribe": {...}}',
            "bad_control",
        )
    ((action, body),) = message.items()
    if action not in ("subscribe", "unsubscribe"):
        raise SubscriptionError(
            f"unknown control {str(action)[:40]!r}: use subscribe or unsubscribe", "bad_control"
        )
    if not isinstance(body, dict):
        raise SubscriptionError(f"{action} takes an object of workers, fields, topics")
    unknown = sorted(set(body) - {"workers", "fields", "topics"})
    if unknown:
        raise SubscriptionError(f"{action}: unknown key {unknown[0][:40]!r}")
    for key, value in body.items():
        if not isinstance(value, list):
            raise SubscriptionError(f"{key} must be a list of strings")
    return action, Change(
        workers=_workers(body["workers"]) if "workers" in body else None,
        fields=_fields(body["fields"]) if "fields" in body else None,
        topics=_topics(body["topics"]) if "topics" in body else None,
    )


# -- changing a subscription -----------------------------------------------------------------


def _add(current: Selection, items: tuple[str, ...] | None, limit: int, what: str) -> Selection:
    """``subscribe``: the first list named replaces the default "all"; later ones add.
    ``*`` is all again."""
    if items is None:
        return current
    if ALL in items:
        return None
    merged = tuple(sorted(set(items) | set(current or ())))
    if len(merged) > limit:
        raise SubscriptionError(f"at most {limit} {what} in one subscription")
    return merged


def _remove(current: Selection, items: tuple[str, ...] | None) -> Selection:
    """``unsubscribe``: removes names; removing ``*`` leaves nothing; removing a name from
    "all" changes nothing (subscribe to the ones you want instead)."""
    if items is None:
        return current
    if ALL in items:
        return ()
    if current is None:
        return None
    return tuple(item for item in current if item not in items)


def apply_change(subscription: Subscription, action: str, change: Change) -> Subscription:
    if action == "subscribe":
        return Subscription(
            _add(subscription.workers, change.workers, MAX_PATTERNS, "worker ids or patterns"),
            _add(subscription.fields, change.fields, MAX_FIELDS, "fields"),
            subscription.topics | frozenset(change.topics or ()),
        )
    return Subscription(
        _remove(subscription.workers, change.workers),
        _remove(subscription.fields, change.fields),
        subscription.topics - frozenset(change.topics or ()),
    )


# -- matching and projection ----------------------------------------------------------------


class WorkerSelector:
    """Matches worker ids against a selection: exact ids by set lookup, globs (case
    sensitive, ``fnmatch`` syntax) with one compiled regular expression."""

    __slots__ = ("_exact", "_glob", "everything")

    def __init__(self, workers: Selection) -> None:
        self.everything = workers is None
        items = workers or ()
        self._exact = frozenset(item for item in items if not _GLOB_CHARS & set(item))
        globs = [item for item in items if _GLOB_CHARS & set(item)]
        self._glob = (
            re.compile("|".join(fnmatch.translate(glob) for glob in globs)) if globs else None
        )

    def matches(self, worker_id: str) -> bool:
        if self.everything or worker_id in self._exact:
            return True
        return self._glob is not None and self._glob.match(worker_id) is not None


def project(worker: Mapping[str, Any], fields: Selection) -> dict[str, Any]:
    """The worker object with only ``fields`` (and ``worker_id``), in its own key order.
    Names the object does not have are left out."""
    if fields is None:
        return dict(worker)
    wanted = set(fields)
    wanted.add(ALWAYS_SENT_FIELD)
    return {key: value for key, value in worker.items() if key in wanted}


def project_fragment(fragment: bytes, fields: Selection) -> bytes:
    """An encoded fragment (``"w1":{...}``) projected to ``fields``, encoded again."""
    if fields is None:
        return fragment
    decoded: dict[str, Any] = orjson.loads(b"{" + fragment + b"}")
    return orjson.dumps({wid: project(obj, fields) for wid, obj in decoded.items()})[1:-1]


def select(
    fragments: Mapping[str, bytes], selector: WorkerSelector, fields: Selection
) -> dict[str, bytes]:
    """The fragments of the workers ``selector`` matches, projected to ``fields``."""
    return {
        worker_id: project_fragment(fragment, fields)
        for worker_id, fragment in fragments.items()
        if selector.matches(worker_id)
    }


# -- frames that are not telemetry -----------------------------------------------------------


def event_frame(topic: str, event: Mapping[str, Any]) -> bytes:
    """``{"topic": T, "event": {...}}``: how every non-telemetry frame looks. A telemetry
    frame never has a string under ``"topic"`` (its values are worker objects)."""
    return orjson.dumps({"topic": topic, "event": event})


def error_frame(error: SubscriptionError | str, code: str = "bad_control") -> bytes:
    if isinstance(error, SubscriptionError):
        code = error.code
    return event_frame("error", {"error": str(error), "code": code})


def ack_frame(subscription: Subscription) -> bytes:
    return event_frame("subscription", subscription.to_json())
