"""Alert rules and silences: the data, and parsing from a TOML file or an API body. Pure.

A rule watches one numeric telemetry field of the workers it selects (``threshold``
rules), or the workers' liveness (the built-in kinds ``worker_inactive`` and
``worker_not_seen``). Every problem is a ``RuleError`` with one line of text that names
the rule and the field.

The rules file (``--alert-rules FILE``)::

    [[rule]]
    name = "high-cpu"
    metric = "cpu_usage"
    comparison = ">"
    threshold = 90
    resolve_threshold = 85      # hysteresis (default: the threshold)
    for = "30s"
    severity = "critical"
    workers = "gpu-*"           # "all" (default), a glob, or a list of ids
    repeat_interval = "1h"
    summary = "CPU above 90 % on {worker_id}"
    labels = { team = "infra" }
"""

from __future__ import annotations

import enum
import fnmatch
import math
import operator
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

MAX_NAME_LENGTH = 128
NAME_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
LABEL_NAME_RULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
MAX_LABELS = 32
MAX_TEXT = 1000
MAX_RULES = 1000
MAX_DURATION = 366 * 86400.0
LATEST_TIME = 4_102_444_800.0  # 2100-01-01, Unix seconds

DEFAULT_REPEAT_INTERVAL: Final = 3600.0
DEFAULT_NOT_SEEN_AFTER: Final = 120.0
SEVERITIES: Final = ("info", "warning", "critical")
RUNNING_TASKS: Final = "running_tasks"
"""The metric of a worker's number of running tasks (its list's length)."""
BASE_METRICS: Final = frozenset(
    {"cpu_usage", "memory_usage", "storage_usage", "gpu_usage", RUNNING_TASKS}
)
"""The metrics every master has; the manager adds the numeric fields its telemetry has."""
RESERVED_LABELS: Final = frozenset({"alertname", "worker_id", "severity"})


class RuleError(ValueError):
    """A rule or silence that cannot be used; the message is one line."""


class Comparison(enum.StrEnum):
    GT = ">"
    GE = ">="
    LT = "<"
    LE = "<="

    @property
    def test(self) -> Callable[[float, float], bool]:
        return _TESTS[self]

    @property
    def upward(self) -> bool:
        """Whether the alert is about values going up (> and >=)."""
        return self in (Comparison.GT, Comparison.GE)


_TESTS: Final[dict[Comparison, Callable[[float, float], bool]]] = {
    Comparison.GT: operator.gt,
    Comparison.GE: operator.ge,
    Comparison.LT: operator.lt,
    Comparison.LE: operator.le,
}


class RuleKind(enum.StrEnum):
    THRESHOLD = "threshold"  # a telemetry field against a threshold
    WORKER_INACTIVE = "worker_inactive"  # the worker turned inactive
    WORKER_NOT_SEEN = "worker_not_seen"  # stored, no heartbeat within `for` of the start


class RuleSource(enum.StrEnum):
    FILE = "file"  # --alert-rules: read-only through the API
    API = "api"  # made through the API, kept in the store


@dataclass(frozen=True, slots=True)
class WorkerSelector:
    """Which workers a rule watches: all, a set of ids, or a glob (``gpu-*``)."""

    ids: frozenset[str] | None = None
    glob: str | None = None

    def matches(self, worker_id: str) -> bool:
        if self.ids is not None:
            return worker_id in self.ids
        if self.glob is not None:
            return fnmatch.fnmatchcase(worker_id, self.glob)
        return True

    def to_spec(self) -> str | list[str]:
        if self.ids is not None:
            return sorted(self.ids)
        return self.glob if self.glob is not None else "all"


ALL_WORKERS: Final = WorkerSelector()


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    kind: RuleKind = RuleKind.THRESHOLD
    metric: str = ""
    comparison: Comparison = Comparison.GT
    threshold: float = 0.0
    resolve_threshold: float | None = None  # None: the threshold
    for_seconds: float = 0.0
    severity: str = "warning"
    labels: tuple[tuple[str, str], ...] = ()  # sorted (name, value) pairs
    workers: WorkerSelector = ALL_WORKERS
    repeat_interval: float = DEFAULT_REPEAT_INTERVAL
    summary: str = ""
    source: RuleSource = field(default=RuleSource.FILE, compare=False)

    @property
    def resolve_at(self) -> float:
        """The value that ends a firing alert (hysteresis)."""
        return self.threshold if self.resolve_threshold is None else self.resolve_threshold

    def describe(self) -> str:
        """``cpu_usage > 90 for 30s`` / ``worker_inactive``."""
        if self.kind is not RuleKind.THRESHOLD:
            text = self.kind.value
        else:
            text = f"{self.metric} {self.comparison} {self.threshold:g}"
        if self.for_seconds:
            text += f" for {format_duration(self.for_seconds)}"
        return text

    def to_spec(self) -> dict[str, Any]:
        """The rule as the rules file and the API write it (``rule_from_spec`` reads it)."""
        spec: dict[str, Any] = {"name": self.name, "kind": self.kind.value}
        if self.kind is RuleKind.THRESHOLD:
            spec.update(
                metric=self.metric, comparison=self.comparison.value, threshold=self.threshold
            )
            spec["resolve_threshold"] = self.resolve_threshold
        spec.update(
            {
                "for": self.for_seconds,
                "severity": self.severity,
                "labels": dict(self.labels),
                "workers": self.workers.to_spec(),
                "repeat_interval": self.repeat_interval,
                "summary": self.summary,
            }
        )
        return spec


# -- durations --------------------------------------------------------------------------------

_UNITS = {"": 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|[smhd]?)")


def parse_duration(value: object, what: str = "duration") -> float:
    """Seconds from a number or ``"500ms"``, ``"30s"``, ``"5m"``, ``"1h30m"``, ``"2d"``."""
    if isinstance(value, bool):
        raise RuleError(f"{what} must be seconds or a duration such as 30s, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        seconds, position = 0.0, 0
        for match in _DURATION_PART.finditer(text):
            if match.start() != position:
                break
            seconds += float(match.group(1)) * _UNITS[match.group(2)]
            position = match.end()
        if not text or position != len(text):
            raise RuleError(f"{what}: expected a duration such as 30s, 5m or 1h, got {value!r}")
    else:
        raise RuleError(f"{what} must be seconds or a duration such as 30s, got {value!r}")
    if not math.isfinite(seconds) or seconds < 0 or seconds > MAX_DURATION:
        raise RuleError(f"{what} must be between 0 and 366 days, got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """``30s``, ``1m30s``, ``2h``, ``500ms``."""
    if 0 < seconds < 1:
        return f"{seconds * 1000:g}ms"
    whole = round(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, whole = divmod(whole, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


# -- rules ------------------------------------------------------------------------------------

RULE_FIELDS: Final = frozenset(
    {
        "name",
        "kind",
        "metric",
        "comparison",
        "threshold",
        "resolve_threshold",
        "for",
        "severity",
        "labels",
        "workers",
        "repeat_interval",
        "summary",
    }
)


def check_name(value: object, what: str = "name") -> str:
    if not isinstance(value, str) or not NAME_RULE.fullmatch(value):
        raise RuleError(
            f"{what} must be 1 to {MAX_NAME_LENGTH} letters, digits and . _ : @ -, starting "
            f"with a letter or digit; got {value!r}"
        )
    return value


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RuleError(f"{what} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise RuleError(f"{what} must be finite, got {value!r}")
    return float(value)


def _text(value: object, what: str, limit: int = MAX_TEXT) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise RuleError(f"{what} must be a string of at most {limit} characters")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise RuleError(f"{what} is not valid Unicode text (a lone surrogate)") from None
    return value


def _labels(value: object, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, Mapping):
        raise RuleError(f'{where}: labels must be a table of name = "value"')
    if len(value) > MAX_LABELS:
        raise RuleError(f"{where}: at most {MAX_LABELS} labels")
    pairs = []
    for name, text in value.items():
        if not isinstance(name, str) or not LABEL_NAME_RULE.fullmatch(name):
            raise RuleError(f"{where}: label name {name!r} is not [A-Za-z_][A-Za-z0-9_]*")
        if name in RESERVED_LABELS:
            raise RuleError(f"{where}: label {name!r} is set by the master")
        pairs.append((name, _text(text, f"{where}: label {name}", 500)))
    return tuple(sorted(pairs))


def _selector(value: object, where: str) -> WorkerSelector:
    if value is None or value == "all" or value == "*":
        return ALL_WORKERS
    if isinstance(value, str):
        if not value or len(value) > 256:
            raise RuleError(f'{where}: workers must be "all", a glob or a list of ids')
        if any(c in value for c in "*?["):
            return WorkerSelector(glob=value)
        return WorkerSelector(ids=frozenset({check_name(value, f"{where}: worker id")}))
    if isinstance(value, list | tuple) and value:
        return WorkerSelector(
            ids=frozenset(check_name(item, f"{where}: worker id") for item in value)
        )
    raise RuleError(f'{where}: workers must be "all", a glob or a non-empty list of ids')


def rule_from_spec(
    spec: Mapping[str, Any],
    *,
    metrics: Iterable[str] = BASE_METRICS,
    source: RuleSource = RuleSource.FILE,
) -> Rule:
    """A rule from its table (the rules file) or body (the API). ``metrics``: the names a
    threshold rule may watch."""
    if not isinstance(spec, Mapping):
        raise RuleError("a rule must be a table")
    name = check_name(spec.get("name"), "rule name")
    where = f"rule {name!r}"
    unknown = sorted(set(spec) - RULE_FIELDS)
    if unknown:
        raise RuleError(
            f"{where}: unknown field {unknown[0]!r} (known: {', '.join(sorted(RULE_FIELDS))})"
        )
    try:
        kind = RuleKind(spec.get("kind", RuleKind.THRESHOLD.value))
    except ValueError:
        raise RuleError(
            f"{where}: kind must be one of {', '.join(k.value for k in RuleKind)}, "
            f"got {spec.get('kind')!r}"
        ) from None
    severity = spec.get("severity", "warning")
    if severity not in SEVERITIES:
        raise RuleError(
            f"{where}: severity must be one of {', '.join(SEVERITIES)}, got {severity!r}"
        )
    for_default = DEFAULT_NOT_SEEN_AFTER if kind is RuleKind.WORKER_NOT_SEEN else 0.0
    for_seconds = parse_duration(spec.get("for", for_default), f"{where}: for")
    repeat = parse_duration(
        spec.get("repeat_interval", DEFAULT_REPEAT_INTERVAL), f"{where}: repeat_interval"
    )
    if repeat <= 0:
        raise RuleError(f"{where}: repeat_interval must be more than 0")
    common: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "for_seconds": for_seconds,
        "severity": severity,
        "labels": _labels(spec.get("labels", {}), where),
        "workers": _selector(spec.get("workers"), where),
        "repeat_interval": repeat,
        "summary": _text(spec.get("summary", ""), f"{where}: summary"),
        "source": source,
    }
    if kind is not RuleKind.THRESHOLD:
        extra = sorted(
            f for f in ("metric", "comparison", "threshold", "resolve_threshold") if f in spec
        )
        if extra:
            raise RuleError(f"{where}: {extra[0]} does not apply to kind {kind.value}")
        return Rule(**common)
    metric = spec.get("metric")
    known = frozenset(metrics)
    if not isinstance(metric, str) or metric not in known:
        raise RuleError(
            f"{where}: metric must be one of {', '.join(sorted(known))}, got {metric!r}"
        )
    try:
        comparison = Comparison(spec.get("comparison", ">"))
    except ValueError:
        raise RuleError(
            f"{where}: comparison must be one of > >= < <=, got {spec.get('comparison')!r}"
        ) from None
    if "threshold" not in spec:
        raise RuleError(f"{where}: threshold is required")
    threshold = _number(spec["threshold"], f"{where}: threshold")
    resolve = spec.get("resolve_threshold")
    resolve_threshold = None if resolve is None else _number(resolve, f"{where}: resolve_threshold")
    if resolve_threshold is not None:
        if comparison.upward and resolve_threshold > threshold:
            raise RuleError(f"{where}: resolve_threshold must be <= threshold for {comparison}")
        if not comparison.upward and resolve_threshold < threshold:
            raise RuleError(f"{where}: resolve_threshold must be >= threshold for {comparison}")
    return Rule(
        metric=metric,
        comparison=comparison,
        threshold=threshold,
        resolve_threshold=resolve_threshold,
        **common,
    )


def parse_rules(
    text: str, *, metrics: Iterable[str] = BASE_METRICS, source: RuleSource = RuleSource.FILE
) -> list[Rule]:
    """Every ``[[rule]]`` of a TOML document; RuleError (one line) on the first problem."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RuleError(f"not valid TOML: {exc}") from None
    unknown = sorted(set(document) - {"rule"})
    if unknown:
        raise RuleError(f"unknown table {unknown[0]!r} (rules are [[rule]] tables)")
    tables = document.get("rule", [])
    if not isinstance(tables, list):
        raise RuleError("rules are [[rule]] tables (an array of tables)")
    if len(tables) > MAX_RULES:
        raise RuleError(f"at most {MAX_RULES} rules")
    known = frozenset(metrics)
    rules = [rule_from_spec(table, metrics=known, source=source) for table in tables]
    check_unique(rules)
    return rules


def check_unique(rules: Sequence[Rule]) -> None:
    seen: set[str] = set()
    for rule in rules:
        if rule.name in seen:
            raise RuleError(f"two rules are named {rule.name!r}")
        seen.add(rule.name)


# -- silences ---------------------------------------------------------------------------------


class MatchOp(enum.StrEnum):
    EQUAL = "="
    NOT_EQUAL = "!="
    REGEX = "=~"
    NOT_REGEX = "!~"


_MATCHER = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*")


@dataclass(frozen=True, slots=True)
class Matcher:
    """One condition on an alert's labels (``alertname`` is the rule, ``worker_id`` the
    worker); regular expressions match the whole value, as in Alertmanager."""

    name: str
    value: str
    op: MatchOp = MatchOp.EQUAL
    _pattern: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def make(cls, name: str, value: str, op: MatchOp | str = MatchOp.EQUAL) -> Matcher:
        if not isinstance(name, str) or not LABEL_NAME_RULE.fullmatch(name):
            raise RuleError(f"matcher label {name!r} is not [A-Za-z_][A-Za-z0-9_]*")
        try:
            kind = MatchOp(op)
        except ValueError:
            raise RuleError(f"matcher operator must be one of = != =~ !~, got {op!r}") from None
        value = _text(value, f"matcher {name}", 500)
        pattern = None
        if kind in (MatchOp.REGEX, MatchOp.NOT_REGEX):
            try:
                pattern = re.compile(value)
            except re.error as exc:
                raise RuleError(
                    f"matcher {name}{kind}{value!r}: not a regular expression: {exc}"
                ) from None
        return cls(name, value, kind, pattern)

    @classmethod
    def parse(cls, text: str) -> Matcher:
        """``alertname=high-cpu``, ``worker_id=~gpu-.*``, ``severity!=info``."""
        match = _MATCHER.fullmatch(text)
        if match is None:
            raise RuleError(
                "a matcher is LABEL=VALUE, LABEL!=VALUE, LABEL=~REGEX or LABEL!~REGEX; "
                f"got {text!r}"
            )
        name, op, value = match.groups()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        return cls.make(name, value, op)

    def matches(self, labels: Mapping[str, str]) -> bool:
        given = labels.get(self.name, "")
        if self.op is MatchOp.EQUAL:
            return given == self.value
        if self.op is MatchOp.NOT_EQUAL:
            return given != self.value
        assert self._pattern is not None
        found = self._pattern.fullmatch(given) is not None
        return found if self.op is MatchOp.REGEX else not found

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.value}"


@dataclass(frozen=True, slots=True)
class Silence:
    """Alerts whose labels match every matcher send nothing from ``starts_at`` until
    ``ends_at`` (Unix seconds); their state is still tracked."""

    silence_id: str
    matchers: tuple[Matcher, ...]
    ends_at: float
    starts_at: float = 0.0
    created_by: str = ""
    comment: str = ""
    created_at: float = 0.0

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(matcher.matches(labels) for matcher in self.matchers)

    def state(self, now: float) -> str:
        if now < self.starts_at:
            return "pending"
        return "active" if now < self.ends_at else "expired"


def make_silence(
    silence_id: str,
    matchers: Sequence[Matcher],
    ends_at: float,
    *,
    starts_at: float,
    created_by: str = "",
    comment: str = "",
    created_at: float = 0.0,
) -> Silence:
    if not matchers:
        raise RuleError("a silence needs at least one matcher")
    if len(matchers) > MAX_LABELS:
        raise RuleError(f"a silence has at most {MAX_LABELS} matchers")
    if not (0 <= starts_at <= LATEST_TIME and 0 <= ends_at <= LATEST_TIME):
        raise RuleError("a silence's start and end must lie between 1970 and 2100")
    if ends_at <= starts_at:
        raise RuleError("a silence must end after it starts")
    return Silence(
        silence_id,
        tuple(matchers),
        ends_at,
        starts_at,
        _text(created_by, "created_by", 200),
        _text(comment, "comment"),
        created_at,
    )
