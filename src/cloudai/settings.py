"""Settings: where every process's configuration comes from, and the only place its
defaults live.

Each process builds one typed settings object (``MasterSettings``, ``WorkerSettings``,
``ClientSettings``) once, at start, and hands it down; nobody reads the environment after
that. Precedence, highest first:

1. command-line flags (the entry point passes the flags given as keyword arguments);
2. environment variables ``CLOUDAI_<FIELD>`` (e.g. ``CLOUDAI_GRPC_PORT``), plus the few
   historic names a field lists (``GRPC_PORT``, ``HTTP_PORT``);
3. a TOML file: ``$CLOUDAI_CONFIG``, else ``~/.config/cloudai/config.toml`` if it exists,
   with one table per process kind (``[master]``, ``[worker]``, ``[client]``);
4. the defaults declared on the fields.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, ClassVar, Self

from pydantic import AliasChoices, Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

CONFIG_ENV = "CLOUDAI_CONFIG"
DEFAULT_URL = "https://127.0.0.1:8080"
ADMIN_TOKEN_FILE = "admin.token"
"""The master's bootstrap admin token, in its data dir (read by clients on that machine)."""
CA_FILE = Path("tls") / "ca.pem"
"""The cluster CA's certificate, under the master's data dir."""


class SettingsError(ValueError):
    """Settings that cannot be used; the message is one line per problem, for people."""


def config_file(environ: dict[str, str] | None = None) -> Path | None:
    """The TOML file to read, if any: ``$CLOUDAI_CONFIG`` (must exist) or the user's."""
    env = os.environ if environ is None else environ
    named = env.get(CONFIG_ENV)
    if named:
        return Path(named).expanduser()
    base = env.get("XDG_CONFIG_HOME") or os.path.join(Path.home(), ".config")
    default = Path(base) / "cloudai" / "config.toml"
    return default if default.is_file() else None


def default_data_root() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(base) / "cloudai"


def env_alias(field: str, *historic: str) -> AliasChoices:
    """``CLOUDAI_<FIELD>`` first, then historic variable names (for a field that has them)."""
    return AliasChoices(f"CLOUDAI_{field.upper()}", *historic)


class CloudAISettings(BaseSettings):
    """Base of the per-process settings: env prefix, TOML table, one-line errors."""

    model_config = SettingsConfigDict(
        env_prefix="CLOUDAI_",
        extra="forbid",
        populate_by_name=True,
        validate_default=True,
    )
    config_table: ClassVar[str] = ""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _file_source(settings_cls, cls.config_table))

    @classmethod
    def load(cls, **flags: Any) -> Any:
        """Settings from ``flags`` (None values are "not given") over env over file.

        Raises SettingsError with one line per invalid value."""
        given = {name: value for name, value in flags.items() if value is not None}
        try:
            return cls(**given)
        except ValidationError as exc:
            raise SettingsError(describe(exc)) from None

    @classmethod
    def default(cls, name: str) -> Any:
        """A field's declared default (for help texts: the one place it is written)."""
        field = cls.model_fields[name]
        if field.default_factory is not None:
            return field.default_factory()  # type: ignore[call-arg]
        return field.default


def _file_source(settings_cls: type[BaseSettings], table: str) -> PydanticBaseSettingsSource:
    path = config_file()
    values: dict[str, Any] = {}
    if path is not None and table:
        try:
            with path.open("rb") as handle:
                document = tomllib.load(handle)
        except OSError as exc:
            raise SettingsError(f"cannot read the config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"the config file {path} is not valid TOML: {exc}") from None
        section = document.get(table, {})
        if not isinstance(section, dict):
            raise SettingsError(f"{path}: [{table}] must be a table")
        values = {key.replace("-", "_"): value for key, value in section.items()}
    return InitSettingsSource(settings_cls, init_kwargs=values)


def secretless(value: Any) -> Any:
    """A URL with credentials (``nats://user:password@host``, ``postgresql://...``) as
    ``scheme://***@host``: an error line never shows a password. Anything else as is."""
    if isinstance(value, str) and "://" in value and "@" in value:
        scheme, _, rest = value.partition("://")
        return f"{scheme}://***@{rest.rpartition('@')[2]}"
    return value


def describe(exc: ValidationError) -> str:
    """A pydantic error as lines a person reads: ``<field>: <problem> (got <value>)``."""
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "settings"
        problem = error["msg"]
        if error["type"] == "extra_forbidden":
            problem = "unknown setting"
        got = error.get("input")
        shown = ""
        if got is not None and not isinstance(got, dict):
            shown = f" (got {secretless(got)!r})"
        lines.append(f"{where.replace('_', '-')}: {problem}{shown}")
    return "; ".join(lines)


class ClientSettings(CloudAISettings):
    """What the ``cloudai`` client commands need to reach a master's HTTP API.

    On the master's machine nothing needs configuring: without a token, the master's
    bootstrap admin token is read from ``<default data dir>/admin.token`` (if this user
    may read it); without a CA file, an https URL is verified against
    ``<default data dir>/tls/ca.pem`` (if it exists)."""

    config_table: ClassVar[str] = "client"

    url: str = Field(DEFAULT_URL, description="the master's HTTP address")
    admin_token: str | None = Field(
        None, description="bearer token for the API (CLOUDAI_ADMIN_TOKEN)"
    )
    ca_file: Path | None = Field(
        None, description="CA certificate the master's HTTPS certificate is checked against"
    )
    timeout: float = Field(10.0, gt=0, description="seconds to wait for an answer")

    @model_validator(mode="after")
    def _same_machine_defaults(self) -> Self:
        if not self.admin_token:
            self.admin_token = local_admin_token()
        if self.ca_file is not None:
            self.ca_file = self.ca_file.expanduser()
        elif uses_tls(self.url):
            self.ca_file = local_ca_file()
        return self


def uses_tls(url: str) -> bool:
    """True for an https or wss address, and for one without a scheme (HTTPS is the
    default)."""
    text = url.strip().lower()
    return text.startswith(("https://", "wss://")) or "://" not in text


def local_admin_token(data_root: Path | None = None) -> str | None:
    """The bootstrap admin token of a master on this machine, if this user can read it."""
    path = (data_root or default_data_root()) / ADMIN_TOKEN_FILE
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text or None


def local_ca_file(data_root: Path | None = None) -> Path | None:
    """The CA certificate of a master on this machine, if there is one."""
    path = (data_root or default_data_root()) / CA_FILE
    return path if path.is_file() else None
