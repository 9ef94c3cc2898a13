"""`cloudai login`: check a master's address and token, then keep them in the config file.

The address, token and CA file come as for every client command (flags over
``CLOUDAI_*`` over the config file over the same-machine defaults); ``login`` calls
``GET /api/status`` with them and, if the master answers, writes them to the
``[client]`` table of the user's config file (``$CLOUDAI_CONFIG``, else
``~/.config/cloudai/config.toml``), created with mode 0600 since it holds a token. The
other tables and the other settings of ``[client]`` are kept (comments are not).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from cloudai.cli.admin import (
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    add_connection_options,
    client_for,
    print_error,
    settings_from_args,
)
from cloudai.cli.api_client import ApiError
from cloudai.settings import CONFIG_ENV, ClientSettings, SettingsError

SUMMARY = "check a master's address and token, and keep them in the config file"


class ConfigError(Exception):
    """The config file cannot be read or written; the text says why."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "login",
        help=SUMMARY,
        description="Check the master's address and token (GET /api/status) and write them, "
        "with the CA file, to the [client] table of your config file ($CLOUDAI_CONFIG, else "
        "~/.config/cloudai/config.toml; mode 0600). The other client commands, top and "
        "watch then use them.",
    )
    add_connection_options(p)
    p.add_argument("--timeout", type=float, help="seconds to wait for the master's answer")
    p.set_defaults(func=run)


def user_config_path(environ: dict[str, str] | None = None) -> Path:
    """Where ``login`` writes: ``$CLOUDAI_CONFIG``, else
    ``$XDG_CONFIG_HOME/cloudai/config.toml`` (``~/.config`` without XDG_CONFIG_HOME)."""
    env = os.environ if environ is None else environ
    named = env.get(CONFIG_ENV)
    if named:
        return Path(named).expanduser()
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "cloudai" / "config.toml"


def client_table(settings: ClientSettings) -> dict[str, Any]:
    """What ``login`` keeps of ``settings``: the URL, the token and the CA file (absolute)."""
    table: dict[str, Any] = {"url": settings.url}
    if settings.admin_token:
        table["admin_token"] = settings.admin_token
    if settings.ca_file is not None:
        table["ca_file"] = str(settings.ca_file.expanduser().resolve())
    return table


def write_client_settings(path: Path, values: dict[str, Any]) -> None:
    """Set ``values`` in the ``[client]`` table of the TOML file ``path``, keeping
    everything else; the file is replaced atomically and left with mode 0600."""
    document: dict[str, Any] = {}
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML ({exc}); fix or remove it") from None
    client = document.setdefault("client", {})
    if not isinstance(client, dict):
        raise ConfigError(f"{path}: [client] must be a table")
    client.update(values)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=".config-", suffix=".toml", dir=path.parent)
    except OSError as exc:
        raise ConfigError(f"cannot write in {path.parent}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as handle:  # mkstemp made it 0600
            tomli_w.dump(document, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
    except SettingsError as exc:
        print_error(str(exc))
        return EXIT_USAGE
    if not settings.admin_token:
        print_error(
            "no token: give --token TOKEN (an API token: 'cloudai api-token create' on a "
            "machine that has one, or the master's admin.token)"
        )
        return EXIT_USAGE
    client = client_for(settings)
    try:
        summary = client.status()
    except ApiError as exc:
        print_error(exc.message)
        return EXIT_UNREACHABLE if exc.unreachable else EXIT_REFUSED
    path = user_config_path()
    try:
        write_client_settings(path, client_table(settings))
    except ConfigError as exc:
        print_error(str(exc))
        return EXIT_REFUSED
    sys.stdout.write(
        f"logged in to {client.url} ({summary.active_workers} of {summary.workers} workers "
        f"active); settings saved in {path}\n"
    )
    sys.stdout.flush()
    return 0
