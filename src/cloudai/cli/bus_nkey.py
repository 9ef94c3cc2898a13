"""`cloudai bus-nkey FILE`: make a NATS user NKey for a master's or a gateway's
``--bus-nkey`` (docs/SCALING.md, "Identity and security").

The seed goes to FILE, created with mode 0600 and never over an existing file; the
public key, which nats-server's authorization block names, is printed on stdout alone
(``PUBLIC=$(cloudai bus-nkey gateway-1.nk)``), what to do with each on stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cloudai.bus.auth import new_user_nkey
from cloudai.cli.admin import EXIT_USAGE, print_error

SUMMARY = "make a NATS user NKey for --bus-nkey (master and gateways)"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "bus-nkey",
        help=SUMMARY,
        description="Write a new NATS user NKey's seed to FILE (mode 0600; an existing file "
        "is never overwritten) for `cloudai master --bus-nkey FILE` or `cloudai gateway "
        "--bus-nkey FILE`, and print its public key (U...), which nats-server's "
        "authorization block names (docs/SCALING.md). One key per process.",
    )
    p.add_argument("file", type=Path, help="where the seed goes (a new file)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path: Path = args.file
    try:
        public = new_user_nkey(path)
    except FileExistsError:
        print_error(f"{path} exists already: a seed is never overwritten; name a new file")
        return EXIT_USAGE
    except OSError as exc:
        print_error(f"cannot write {path}: {exc.strerror}")
        return EXIT_USAGE
    sys.stderr.write(
        f"wrote a new NATS user NKey's seed to {path} (mode 0600): give it to --bus-nkey.\n"
        "Its public key, for the user's entry in nats-server's authorization block:\n"
    )
    sys.stderr.flush()
    print(public)
    return 0
