"""`cloudai` command: dispatches to one module per subcommand group, imported lazily.

``COMMANDS`` names every command, the module that implements it and its one-line
description. Only the chosen command's module is imported (each exposes
``register(subparsers)``, which adds its subcommands with ``func(args) -> int``), so
``cloudai --help`` and a client command do not pay for gRPC, aiohttp or the database.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import NamedTuple

from cloudai import __version__

# Workers fork task processes while gRPC threads run. gRPC's fork handlers are meant for
# children that keep using gRPC; ours exec at once, and the handlers can crash them
# between fork and exec. Must be set before grpc is imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
# gRPC's core writes a line to stderr for every failed TLS handshake at its default
# verbosity: a stranger knocking on the port could fill the log. Errors only.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


class CommandEntry(NamedTuple):
    module: str
    summary: str


COMMANDS: dict[str, CommandEntry] = {
    "up": CommandEntry("cloudai.cli.up", "start a local cluster: a master and N workers"),
    "master": CommandEntry("cloudai.master.cli", "run a master node"),
    "worker": CommandEntry("cloudai.worker.cli", "run a worker node that joins a master"),
    "gateway": CommandEntry(
        "cloudai.gateway.cli",
        "run a gateway: workers' gRPC and telemetry WebSockets, through the bus",
    ),
    "status": CommandEntry("cloudai.cli.admin", "cluster summary: workers, tasks, ingest rate"),
    "workers": CommandEntry("cloudai.cli.admin", "list the master's workers, or show one"),
    "register": CommandEntry("cloudai.cli.admin", "authorise a worker on the master"),
    "unregister": CommandEntry("cloudai.cli.admin", "revoke a worker's authorisation"),
    "submit": CommandEntry("cloudai.cli.admin", "submit a task to a worker"),
    "tasks": CommandEntry("cloudai.cli.admin", "list tasks"),
    "cancel": CommandEntry("cloudai.cli.admin", "ask a task's worker to cancel it"),
    "logs": CommandEntry("cloudai.cli.admin", "print a task's logs"),
    "alerts": CommandEntry(
        "cloudai.cli.alerts", "alerts: current alerts, history, rules and silences"
    ),
    "history": CommandEntry(
        "cloudai.cli.history",
        "a worker's telemetry history: sparklines, min/avg/max, JSON, PNG",
    ),
    "token": CommandEntry(
        "cloudai.cli.tokens", "join tokens: let machines join the cluster as workers"
    ),
    "api-token": CommandEntry(
        "cloudai.cli.tokens", "API tokens: let people and programs use the master's API"
    ),
    "login": CommandEntry(
        "cloudai.cli.login", "check a master's address and token, and keep them in the config file"
    ),
    "top": CommandEntry(
        "cloudai.cli.top", "live full-screen view of the cluster, like htop (h for help, q quits)"
    ),
    "watch": CommandEntry(
        "cloudai.cli.watch", "print each worker's live telemetry, one line per update"
    ),
    "bus-nkey": CommandEntry(
        "cloudai.cli.bus_nkey", "make a NATS user NKey for --bus-nkey (master and gateways)"
    ),
    "bench": CommandEntry(
        "cloudai.bench.cli", "load-test a master (simulated workers and WebSocket clients)"
    ),
}

EPILOG = "Run 'cloudai COMMAND --help' for a command's options."


def chosen_command(argv: list[str]) -> str | None:
    """The command word in ``argv`` (skipping the global options), if any."""
    words = iter(argv)
    for word in words:
        if word == "--log-level":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def build_parser(
    command: str | None = None, *, everything: bool = False
) -> argparse.ArgumentParser:
    """The parser; ``command``'s module is imported and registers its real options (every
    module's with ``everything``: for tests and documentation)."""
    parser = argparse.ArgumentParser(
        prog="cloudai",
        description="CloudAI: a cluster master/worker system with real-time telemetry.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"cloudai {__version__}")
    parser.add_argument(
        "--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    if everything:
        wanted = {entry.module for entry in COMMANDS.values()}
    elif command in COMMANDS:
        wanted = {COMMANDS[command].module}
    else:
        wanted = set()
    registered: set[str] = set()
    for name, entry in COMMANDS.items():
        if entry.module in wanted:
            if entry.module not in registered:
                importlib.import_module(entry.module).register(subparsers)
                registered.add(entry.module)
        else:
            subparsers.add_parser(name, help=entry.summary, add_help=False)
    return parser


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(chosen_command(argv))
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    configure_logging(args.log_level)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
