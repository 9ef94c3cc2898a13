"""`cloudai alerts` (cli/alerts.py) run in-process against one real secure master: what the
commands print (one-line confirmations, --plain rows, --json), what the master then
holds (read back through the API), and how bad usage and refusals are shown."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudai.cli.admin import EXIT_REFUSED, EXIT_USAGE
from cloudai.cli.main import main
from tests.harness import Process, admin_client, start_master

RULE_HEADER = "name\tkind\tsource\texpression\tseverity\tworkers"
SILENCE_HEADER = "silence_id\tstate\tmatchers\tstarts_at\tends_at\tcreated_by\tcomment"
ALERT_HEADER = "rule\tworker_id\tstate\tseverity\tvalue\tsince\tfired_at\tsilenced"
EVENT_HEADER = "id\tat\trule\tworker_id\tstate\tseverity\tvalue\tsilenced\treason"
SILENCE_MADE = re.compile(r"silence (\w+) until (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d): (.+)")


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    master = start_master(tmp_path_factory.mktemp("alerts-cli"), secure=True)
    try:
        yield master
    finally:
        master.close()


@pytest.fixture(autouse=True)
def _client_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only the flags steer the client: no CLOUDAI_* variables, no config file."""
    for name in ("URL", "ADMIN_TOKEN", "CA_FILE", "CONFIG", "TIMEOUT"):
        monkeypatch.delenv(f"CLOUDAI_{name}", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))


class Cli:
    """``cloudai alerts ...`` against ``master``: (exit code, stdout, stderr)."""

    def __init__(self, master: Process, capsys: pytest.CaptureFixture[str]) -> None:
        self.master, self.capsys = master, capsys

    def __call__(self, *args: str, token: str | None = "admin") -> tuple[int, str, str]:
        flags = ["--url", self.master.extra["http"], "--ca", self.master.extra["ca_file"]]
        if token is not None:
            flags += ["--token", self.master.extra["admin_token"] if token == "admin" else token]
        self.capsys.readouterr()
        code = main(["alerts", *args, *flags])
        out, err = self.capsys.readouterr()
        return code, out, err

    def usage_error(self, *args: str) -> str:
        """The stderr of a command that argparse refuses (exit 2)."""
        with pytest.raises(SystemExit) as exited:
            self(*args)
        assert exited.value.code == EXIT_USAGE
        out, err = self.capsys.readouterr()
        assert out == "" and "Traceback" not in err
        return err.splitlines()[-1]

    def rows(self, *args: str) -> list[list[str]]:
        code, out, err = self(*args, "--plain")
        assert (code, err) == (0, "")
        return [line.split("\t") for line in out.splitlines()]


@pytest.fixture
def cli(master: Process, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(master, capsys)


def rule_names(master: Process) -> set[str]:
    return {rule.name for rule in admin_client(master).alert_rules()}


def one_error_line(err: str) -> str:
    assert "Traceback" not in err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err.removeprefix("error: ").rstrip("\n")


def test_rule_add_then_listed_plain_json_and_held(cli: Cli, master: Process) -> None:
    code, out, err = cli(
        "rules", "add", "cli-cpu-hot", "--metric", "cpu_usage", "--threshold", "90",
        "--for", "30s", "--severity", "critical", "--label", "team=infra",
        "--summary", "CPU hot on {worker_id}",
    )  # fmt: skip
    assert (code, out, err) == (0, "alert rule cli-cpu-hot made: cpu_usage > 90 for 30s\n", "")

    rows = cli.rows("rules")
    assert "\t".join(rows[0]) == RULE_HEADER
    expected = ["cli-cpu-hot", "threshold", "api", "cpu_usage > 90 for 30s", "critical", "all"]
    assert expected in rows[1:]
    assert rows == cli.rows("rules", "list")

    code, out, err = cli("rules", "list", "--json")
    assert (code, err) == (0, "")
    listed: list[dict[str, Any]] = json.loads(out)
    [rule] = [r for r in listed if r["name"] == "cli-cpu-hot"]
    assert rule["metric"] == "cpu_usage" and rule["comparison"] == ">"
    assert rule["threshold"] == 90.0 and rule["for_seconds"] == 30.0
    assert rule["labels"] == {"team": "infra"} and rule["summary"] == "CPU hot on {worker_id}"
    assert rule["expression"] == "cpu_usage > 90 for 30s" and rule["source"] == "api"

    [held] = [r for r in admin_client(master).alert_rules() if r.name == "cli-cpu-hot"]
    assert (held.severity, held.labels, held.for_seconds) == ("critical", {"team": "infra"}, 30)

    code, out, err = cli("rules", "add", "cli-cpu-hot", "--metric", "cpu_usage", "--threshold", "1")
    assert code == EXIT_REFUSED and out == ""
    assert one_error_line(err) == "an alert rule named 'cli-cpu-hot' exists already"
    admin_client(master).delete_alert_rule("cli-cpu-hot")


@pytest.mark.parametrize("missing", ["--metric", "--threshold"])
def test_threshold_rule_needs_metric_and_threshold(cli: Cli, master: Process, missing: str) -> None:
    given = {"--metric": "cpu_usage", "--threshold": "90"}
    flags = [word for name, value in given.items() if name != missing for word in (name, value)]
    code, out, err = cli("rules", "add", "cli-half", *flags)
    assert (code, out) == (EXIT_USAGE, "")
    assert one_error_line(err) == "a threshold rule needs --metric and --threshold"
    assert "cli-half" not in rule_names(master)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--label", "team"], "argument --label: a label is NAME=VALUE, got 'team'"),
        (["--label", "=infra"], "argument --label: a label is NAME=VALUE, got '=infra'"),
        (["--for", "soon"], "argument --for: duration: expected a duration such as 30s"),
        (["--repeat", "1x"], "argument --repeat: duration: expected a duration such as 30s"),
        (["--op", "=="], "argument --op: invalid choice: '=='"),
    ],
)
def test_rule_add_bad_flags_are_usage_errors(cli: Cli, args: list[str], message: str) -> None:
    line = cli.usage_error(
        "rules", "add", "cli-bad", "--metric", "cpu_usage", "--threshold", "1", *args
    )
    assert line.startswith("cloudai alerts rules add: error: ") and message in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["1bad=x"], "argument MATCHER: a matcher is LABEL=VALUE, LABEL!=VALUE, LABEL=~REGEX"),
        (["alertname"], "argument MATCHER: a matcher is LABEL=VALUE"),
        (["worker_id=~("], "argument MATCHER: matcher worker_id=~'(': not a regular expression"),
        (["alertname=x", "--duration", "0"], "argument --duration: a duration must be more than 0"),
        (["alertname=x", "--duration", "2x"], "argument --duration: duration: expected a duration"),
    ],
)
def test_silence_bad_matcher_or_duration_is_a_usage_error(
    cli: Cli, args: list[str], message: str
) -> None:
    line = cli.usage_error("silence", "--duration", "30m", *args)
    assert line.startswith("cloudai alerts silence: error: ") and message in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["", "--threshold", "1"], "name: string should have at least 1 character"),
        (["cli-nan", "--threshold", "nan"], "threshold: input should be a finite number"),
        (["cli-nope", "--threshold", "1", "--metric", "nope"], "rule 'cli-nope': metric must"),
    ],
)
def test_rule_add_invalid_values_are_one_line(
    cli: Cli, master: Process, args: list[str], message: str
) -> None:
    code, out, err = cli("rules", "add", args[0], "--metric", "cpu_usage", *args[1:])
    assert (code, out) == (EXIT_REFUSED if "nope" in args else EXIT_USAGE, "")
    assert one_error_line(err).startswith(message)
    assert args[0] not in rule_names(master)


def test_silence_listed_then_ended(cli: Cli, master: Process) -> None:
    matchers = ["alertname=cli-quiet", "worker_id=~w.*"]
    before = time.time()
    code, out, err = cli("silence", *matchers, "--duration", "30m", "--comment", "c", "--by", "me")
    assert (code, err) == (0, "")
    made = SILENCE_MADE.fullmatch(out.rstrip("\n"))
    assert made is not None and out.count("\n") == 1, out
    silence_id, until, shown = made.groups()
    assert shown == "alertname=cli-quiet, worker_id=~w.*"
    ends = time.mktime(time.strptime(until, "%Y-%m-%d %H:%M:%S"))
    assert before + 1800 - 1 <= ends <= time.time() + 1800

    rows = cli.rows("silences")
    assert "\t".join(rows[0]) == SILENCE_HEADER
    [row] = [r for r in rows[1:] if r[0] == silence_id]
    assert row[1:3] == ["active", shown] and row[5:] == ["me", "c"]
    starts_at, ends_at = float(row[3]), float(row[4])
    assert ends_at - starts_at == pytest.approx(1800) and before - 1 <= starts_at <= time.time()
    [held] = [s for s in admin_client(master).silences() if s.silence_id == silence_id]
    assert [(m.name, m.op, m.value) for m in held.matchers] == [
        ("alertname", "=", "cli-quiet"),
        ("worker_id", "=~", "w.*"),
    ]
    assert (held.state, held.created_by, held.comment) == ("active", "me", "c")

    assert cli("unsilence", silence_id) == (0, f"silence {silence_id} ended\n", "")
    assert silence_id not in [r[0] for r in cli.rows("silences")[1:]]  # the master drops it
    assert silence_id not in [s.silence_id for s in admin_client(master).silences()]
    code, out, err = cli("unsilence", silence_id)
    assert (code, out) == (EXIT_REFUSED, "")
    assert one_error_line(err) == f"no silence '{silence_id}'"


def test_rule_delete_then_again(cli: Cli, master: Process) -> None:
    code, _, _ = cli(
        "rules", "add", "cli-doomed", "--kind", "worker_inactive", "--workers", "w1,w2"
    )
    assert code == 0
    assert ["cli-doomed", "worker_inactive", "api", "worker_inactive", "warning", "w1,w2"] in (
        cli.rows("rules")
    )
    assert cli("rules", "delete", "cli-doomed") == (0, "alert rule cli-doomed deleted\n", "")
    assert "cli-doomed" not in rule_names(master)
    assert "cli-doomed" not in [row[0] for row in cli.rows("rules")]
    code, out, err = cli("rules", "delete", "cli-doomed")
    assert (code, out) == (EXIT_REFUSED, "")
    assert one_error_line(err) == "no alert rule 'cli-doomed'"


@pytest.mark.parametrize(
    ("args", "header"),
    [
        (["history"], EVENT_HEADER),
        (["history", "--rule", "cli-none", "--limit", "5"], EVENT_HEADER),
        (["--state", "firing"], ALERT_HEADER),
        ([], ALERT_HEADER),
    ],
)
def test_listings_without_alerts_print_the_header(cli: Cli, args: list[str], header: str) -> None:
    assert cli(*args, "--plain") == (0, header + "\n", "")  # no worker, so no alert
    assert cli(*args, "--json") == (0, "[]\n", "")


@pytest.mark.parametrize("token", [None, "not-a-token"])
@pytest.mark.parametrize(
    "args",
    [
        ["rules"],
        ["rules", "add", "cli-anon", "--metric", "cpu_usage", "--threshold", "1"],
        ["silence", "alertname=cli-anon", "--duration", "1h"],
        ["--plain"],
    ],
)
def test_without_a_valid_token_one_error_line(
    cli: Cli, master: Process, token: str | None, args: list[str]
) -> None:
    code, out, err = cli(*args, token=token)
    assert (code, out) == (EXIT_REFUSED, "")
    message = one_error_line(err)
    if token is None:
        assert message.startswith("this call needs an API token")
    else:
        assert message == "the token is not accepted by this master (unknown, expired or revoked)"
    assert "cli-anon" not in rule_names(master)
    assert not [s for s in admin_client(master).silences() if s.matchers[0].value == "cli-anon"]
