"""The ``docker run`` line that a Go master's CLI puts into ``Task.command``. Pure.

The existing Go CLI submits an image task as ``docker_image=IMAGE`` together with
``command="docker run --rm --cpus=C --memory=M IMAGE"``: the line its own worker
executes on the host. Run inside the image as a shell command, that line would fail
(there is no Docker client in the image). :func:`parse_docker_run` recognises such a line
when it names the task's own image, so that the Docker runtime runs the image itself,
with the line's limits where the request fields carry none.

Only ``--cpus`` and ``--memory``/``-m`` are read from the line; every other flag
(volumes, privileges, network, names, ``--rm`` ...) is ignored: how a container runs
is the worker's decision, not the line's. Words after the image replace the image's
command, as with ``docker run``. A line that is not ``docker run``/``docker container
run``, that cannot be parsed, or that names another image is not recognised (None):
it is then an ordinary command, run by ``/bin/sh -c`` inside the task's image.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass

# ``docker run`` flags that take no value (all others do, unless written ``--flag=value``).
_BOOLEAN_LONG = frozenset(
    {
        "--rm",
        "--detach",
        "--interactive",
        "--tty",
        "--init",
        "--privileged",
        "--read-only",
        "--publish-all",
        "--no-healthcheck",
        "--oom-kill-disable",
        "--sig-proxy",
        "--disable-content-trust",
        "--quiet",
        "--help",
        "--debug",
        "--tls",
        "--tlsverify",
    }
)
_BOOLEAN_SHORT = frozenset("ditPq")
# Value flags of the ``docker`` client itself, before ``run`` (``docker -H X run ...``).
_CLIENT_VALUE_FLAGS = frozenset(
    {"-H", "--host", "-c", "--context", "--config", "-l", "--log-level"}
    | {"--tlscacert", "--tlscert", "--tlskey"}
)

_RAM = re.compile(r"^(\d+(?:\.\d+)?)\s?([kmgtp])?i?b?$", re.IGNORECASE)
_RAM_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


@dataclass(frozen=True, slots=True)
class DockerRunLine:
    """What a recognised ``docker run`` line asks for."""

    image: str
    cpus: float | None = None  # --cpus, cores
    memory_bytes: int | None = None  # --memory / -m
    args: tuple[str, ...] = ()  # words after the image: the container's command


def parse_memory(text: str) -> int | None:
    """Bytes of a Docker memory size (``64m``, ``1g``, ``512MiB``, ``100000``), binary
    units as the ``docker`` client reads them; None when it is not one."""
    match = _RAM.match(text.strip())
    if match is None:
        return None
    value = float(match.group(1)) * _RAM_UNITS[(match.group(2) or "").lower()]
    return int(value) if value > 0 else None


def parse_cpus(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value > 0 and value != float("inf") else None


def normalise_image(reference: str) -> str:
    """An image reference in one spelling: Docker Hub's default registry and ``library/``
    namespace dropped, ``:latest`` added when it names neither tag nor digest."""
    name = reference.strip()
    for prefix in ("docker.io/", "index.docker.io/", "registry-1.docker.io/"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    if name.startswith("library/") and name.count("/") == 1:
        name = name[len("library/") :]
    if "@" not in name and ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return name


def same_image(a: str, b: str) -> bool:
    return normalise_image(a) == normalise_image(b)


def _run_arguments(words: list[str]) -> list[str] | None:
    """The words after ``docker [client flags] [container] run``; None if it is not that."""
    if not words or os.path.basename(words[0]) != "docker":
        return None
    i = 1
    while i < len(words) and words[i].startswith("-"):
        flag = words[i]
        i += 1 if "=" in flag or flag not in _CLIENT_VALUE_FLAGS else 2
    if i < len(words) and words[i] == "container":
        i += 1
    if i >= len(words) or words[i] != "run":
        return None
    return words[i + 1 :]


def parse_docker_run(command: str, image: str) -> DockerRunLine | None:
    """The ``docker run`` line ``command`` if it runs ``image``; otherwise None."""
    try:
        words = shlex.split(command)
    except ValueError:  # unbalanced quotes: not a line we recognise
        return None
    rest = _run_arguments(words)
    if rest is None:
        return None
    values: dict[str, str] = {}
    i = 0
    while i < len(rest):
        word = rest[i]
        if word == "--":
            i += 1
            break
        if not word.startswith("-") or word == "-":
            break
        if word.startswith("--"):
            name, has_value, value = word.partition("=")
            if not has_value and name in _BOOLEAN_LONG:
                value = "true"
            elif not has_value:
                if i + 1 >= len(rest):
                    return None
                i += 1
                value = rest[i]
            values[name] = value
            i += 1
            continue
        # short flags, possibly grouped (-it) and with an attached value (-m64m)
        j = 1
        while j < len(word):
            letter = word[j]
            if letter in _BOOLEAN_SHORT:
                j += 1
                continue
            value = word[j + 1 :].removeprefix("=")
            if not value:
                if i + 1 >= len(rest):
                    return None
                i += 1
                value = rest[i]
            values[f"-{letter}"] = value
            break
        i += 1
    if i >= len(rest) or not same_image(rest[i], image):
        return None
    memory = values.get("--memory", values.get("-m"))
    cpus = values.get("--cpus")
    return DockerRunLine(
        image=rest[i],
        cpus=parse_cpus(cpus) if cpus is not None else None,
        memory_bytes=parse_memory(memory) if memory is not None else None,
        args=tuple(rest[i + 1 :]),
    )
