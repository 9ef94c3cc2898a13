"""`cloudai alerts`: the master's alerts, their history, the alert rules and silences,
through the admin API (docs/ALERTS.md).

    cloudai alerts [--state firing]                 current alerts
    cloudai alerts history [--rule R] [--worker W]  transitions to firing and resolved
    cloudai alerts rules [list|add|delete]          the rules (file rules are read-only)
    cloudai alerts silence MATCHER... --duration 2h silence matching alerts
    cloudai alerts silences                         the silences
    cloudai alerts unsilence ID                     end a silence

The connection and output options are those of the other client commands
(``cli/admin.py``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from cloudai.alerts import views as alert_views
from cloudai.alerts.rules import Matcher, RuleError, parse_duration
from cloudai.api.errors import describe
from cloudai.api.models import (
    Alert,
    AlertEvent,
    AlertRule,
    AlertRuleSpec,
    SilenceInfo,
    SilenceMatcher,
    SilenceRequest,
)
from cloudai.cli.admin import (
    EXIT_USAGE,
    call_api,
    connection_options,
    output_options,
    plain_rows,
    print_error,
)

SUMMARY = "alerts: current alerts, history, rules and silences"
STATES = ("pending", "firing", "resolved")


def _duration(text: str) -> float:
    try:
        seconds = parse_duration(text)
    except RuleError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"a duration must be more than 0, got {text!r}")
    return seconds


def _rule_duration(text: str) -> str:
    """--for and --repeat: checked here (a bad one is bad usage, as --duration's), sent
    as written; the master checks the range."""
    try:
        parse_duration(text)
    except RuleError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _matcher(text: str) -> Matcher:
    try:
        return Matcher.parse(text)
    except RuleError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _label(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"a label is NAME=VALUE, got {text!r}")
    return name, value


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    connection = connection_options()
    output, listing = output_options(listing=False), output_options(listing=True)

    top = subparsers.add_parser(
        "alerts",
        help=SUMMARY,
        description="The master's alerts (pending, firing, recently resolved); subcommands "
        "show the history and manage alert rules and silences.",
        parents=[connection, listing],
    )
    top.add_argument("--state", choices=STATES, help="only alerts in this state")
    top.set_defaults(func=run_list, plain=False)
    commands = top.add_subparsers(dest="alerts_command", metavar="COMMAND", title="commands")

    def add(
        group: Any,
        name: str,
        help_text: str,
        func: Callable[[argparse.Namespace], int],
        lists: bool = False,
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = group.add_parser(
            name,
            help=help_text,
            description=help_text,
            parents=[connection, listing if lists else output],
        )
        p.set_defaults(func=func, plain=False)
        return p

    p = add(
        commands, "history", "transitions to firing and resolved, newest first", run_history, True
    )
    p.add_argument("--rule", help="only this rule")
    p.add_argument("--worker", metavar="WORKER_ID", help="only this worker")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="at most N (default 100)")

    rules = add(
        commands, "rules", "list the alert rules (or: rules add, rules delete)", run_rules, True
    )
    rule_commands = rules.add_subparsers(dest="rules_command", metavar="COMMAND", title="commands")
    add(rule_commands, "list", "list the alert rules", run_rules, True)
    p = add(rule_commands, "add", "make an alert rule (kept by the master's store)", run_rule_add)
    p.add_argument("name", metavar="NAME")
    p.add_argument(
        "--kind",
        choices=("threshold", "worker_inactive", "worker_not_seen"),
        default="threshold",
        help="threshold (default): a metric against a threshold; worker_inactive; "
        "worker_not_seen (a stored worker not heard from within --for of the master's start)",
    )
    p.add_argument("--metric", help="cpu_usage, memory_usage, gpu_usage, running_tasks, ...")
    p.add_argument("--op", dest="comparison", choices=(">", ">=", "<", "<="), help="default >")
    p.add_argument("--threshold", type=float)
    p.add_argument("--resolve", type=float, metavar="VALUE", help="resolve threshold (hysteresis)")
    p.add_argument(
        "--for", dest="for_", type=_rule_duration, metavar="DURATION", help="e.g. 30s, 5m"
    )
    p.add_argument("--severity", choices=("info", "warning", "critical"), default="warning")
    p.add_argument("--workers", default="all", help='"all", a glob (gpu-*) or ID,ID,...')
    p.add_argument("--label", type=_label, action="append", default=[], metavar="NAME=VALUE")
    p.add_argument(
        "--repeat",
        type=_rule_duration,
        metavar="DURATION",
        help="re-send a firing alert this often (1h)",
    )
    p.add_argument("--summary", default="", help="a line for notifications ({worker_id}, {value})")
    p = add(rule_commands, "delete", "delete an alert rule made through the API", run_rule_delete)
    p.add_argument("name", metavar="NAME")

    p = add(commands, "silence", "silence the alerts whose labels match", run_silence)
    p.add_argument(
        "matchers",
        nargs="+",
        type=_matcher,
        metavar="MATCHER",
        help="LABEL=VALUE, LABEL!=VALUE, LABEL=~REGEX, LABEL!~REGEX; labels: alertname "
        "(the rule), worker_id, severity, the rule's labels",
    )
    p.add_argument("--duration", type=_duration, required=True, help="e.g. 30m, 2h")
    p.add_argument("--comment", default="")
    p.add_argument("--by", default="", help="who silences (shown in the list)")
    add(commands, "silences", "list the silences", run_silences, True)
    p = add(commands, "unsilence", "end a silence now", run_unsilence)
    p.add_argument("silence_id", metavar="SILENCE_ID")


def _dump(models: list[Any]) -> list[dict[str, Any]]:
    return [model.model_dump(mode="json") for model in models]


ALERT_COLUMNS = ("rule", "worker_id", "state", "severity", "value", "since", "fired_at", "silenced")
EVENT_COLUMNS = (
    "id",
    "at",
    "rule",
    "worker_id",
    "state",
    "severity",
    "value",
    "silenced",
    "reason",
)
RULE_COLUMNS = ("name", "kind", "source", "expression", "severity", "workers")
SILENCE_COLUMNS = (
    "silence_id",
    "state",
    "matchers",
    "starts_at",
    "ends_at",
    "created_by",
    "comment",
)


def plain_alerts(alerts: list[Alert]) -> str:
    return plain_rows(ALERT_COLUMNS, ([getattr(a, c) for c in ALERT_COLUMNS] for a in alerts))


def plain_events(events: list[AlertEvent]) -> str:
    return plain_rows(EVENT_COLUMNS, ([getattr(e, c) for c in EVENT_COLUMNS] for e in events))


def plain_rules(rules: list[AlertRule]) -> str:
    def row(rule: AlertRule) -> list[object]:
        workers = rule.workers if isinstance(rule.workers, str) else ",".join(rule.workers)
        return [rule.name, rule.kind, rule.source, rule.expression, rule.severity, workers]

    return plain_rows(RULE_COLUMNS, (row(r) for r in rules))


def plain_silences(silences: list[SilenceInfo]) -> str:
    def row(s: SilenceInfo) -> list[object]:
        matchers = alert_views.matchers_text(m.model_dump() for m in s.matchers)
        return [s.silence_id, s.state, matchers, s.starts_at, s.ends_at, s.created_by, s.comment]

    return plain_rows(SILENCE_COLUMNS, (row(s) for s in silences))


def run_list(args: argparse.Namespace) -> int:
    return call_api(
        args,
        lambda c: c.alerts(args.state),
        lambda alerts: alert_views.alerts_table(_dump(alerts), time.time()),
        plain_alerts,
    )


def run_history(args: argparse.Namespace) -> int:
    return call_api(
        args,
        lambda c: c.alert_history(args.rule, args.worker, args.limit),
        lambda events: alert_views.history_table(_dump(events), time.time()),
        plain_events,
    )


def run_rules(args: argparse.Namespace) -> int:
    return call_api(
        args,
        lambda c: c.alert_rules(),
        lambda rules: alert_views.rules_table(_dump(rules)),
        plain_rules,
    )


def run_rule_add(args: argparse.Namespace) -> int:
    fields: dict[str, Any] = {"name": args.name, "kind": args.kind, "severity": args.severity}
    workers = args.workers
    if "," in workers:
        workers = [w.strip() for w in workers.split(",") if w.strip()]
    fields["workers"] = workers
    for key, value in (
        ("metric", args.metric),
        ("comparison", args.comparison),
        ("threshold", args.threshold),
        ("resolve_threshold", args.resolve),
        ("for", args.for_),
        ("repeat_interval", args.repeat),
    ):
        if value is not None:
            fields[key] = value
    if args.label:
        fields["labels"] = dict(args.label)
    if args.summary:
        fields["summary"] = args.summary
    if args.kind == "threshold" and (args.metric is None or args.threshold is None):
        sys.stderr.write("error: a threshold rule needs --metric and --threshold\n")
        return EXIT_USAGE
    try:
        spec = AlertRuleSpec.model_validate(fields, strict=False)
    except ValidationError as exc:  # an empty NAME, --threshold nan, a summary too long...
        print_error(describe(exc, AlertRuleSpec))
        return EXIT_USAGE
    return call_api(
        args,
        lambda c: c.add_alert_rule(spec),
        lambda rule: f"alert rule {rule.name} made: {rule.expression}",
    )


def run_rule_delete(args: argparse.Namespace) -> int:
    return call_api(
        args,
        lambda c: c.delete_alert_rule(args.name),
        lambda rule: f"alert rule {rule.name} deleted",
    )


def run_silence(args: argparse.Namespace) -> int:
    request = SilenceRequest.model_construct(
        matchers=[
            SilenceMatcher.model_construct(name=m.name, value=m.value, op=str(m.op))  # type: ignore[arg-type]
            for m in args.matchers
        ],
        duration_seconds=args.duration,
        comment=args.comment,
        created_by=args.by,
    )
    return call_api(
        args,
        lambda c: c.add_silence(request),
        lambda s: (
            f"silence {s.silence_id} until "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(s.ends_at))}: "
            f"{alert_views.matchers_text(m.model_dump() for m in s.matchers)}"
        ),
    )


def run_silences(args: argparse.Namespace) -> int:
    return call_api(
        args,
        lambda c: c.silences(),
        lambda silences: alert_views.silences_table(_dump(silences), time.time()),
        plain_silences,
    )


def run_unsilence(args: argparse.Namespace) -> int:
    return call_api(
        args,
        lambda c: c.delete_silence(args.silence_id),
        lambda s: f"silence {s.silence_id} ended",
    )
