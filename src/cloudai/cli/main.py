"""`cloudai` command: dispatches to one module per subcommand group.

Each module named in ``_COMMAND_MODULES`` exposes ``register(subparsers)``, which adds
its subcommands and sets ``func(args) -> int`` on each of them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from cloudai import __version__

# Workers fork task processes while gRPC threads run. gRPC's fork handlers are meant for
# children that keep using gRPC; ours exec at once, and the handlers can crash them
# between fork and exec. Must be set before grpc is imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

_COMMAND_MODULES = (
    "cloudai.master.cli",
    "cloudai.worker.cli",
    "cloudai.cli.watch",
    "cloudai.cli.admin",
    "cloudai.cli.top",
    "cloudai.cli.up",
    "cloudai.bench.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cloudai", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"cloudai {__version__}")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if not exc.name or not name.startswith(exc.name):
                raise  # a real missing dependency, not a command group left out
            continue
        module.register(subparsers)
    return parser


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    configure_logging(args.log_level)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
