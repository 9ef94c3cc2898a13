"""Recognising a Go master's ``docker run ... IMAGE`` line (pure)."""

from __future__ import annotations

import pytest

from cloudai.worker.runtimes.docker_command import (
    DockerRunLine,
    normalise_image,
    parse_cpus,
    parse_docker_run,
    parse_memory,
    same_image,
)

IMAGE = "cloudai-test-busybox:1"


def test_the_line_the_go_cli_sends() -> None:
    line = parse_docker_run(f"docker run --rm --cpus=0.5 --memory=64m {IMAGE}", IMAGE)
    assert line == DockerRunLine(image=IMAGE, cpus=0.5, memory_bytes=64 << 20)


@pytest.mark.parametrize(
    "command",
    [
        f"docker run --rm --cpus 0.5 --memory 64m {IMAGE}",
        f"docker run --rm --cpus=0.5 -m 64m {IMAGE}",
        f"docker run --rm --cpus=0.5 -m64m {IMAGE}",
        f"docker run -it --rm --cpus='0.5' --memory=\"64m\" {IMAGE}",
        f"docker container run --rm --cpus=0.5 --memory=64MiB {IMAGE}",
        f"/usr/bin/docker run --rm --cpus=0.5 --memory=64MB '{IMAGE}'",
        f"docker -H unix:///var/run/docker.sock run --cpus=0.5 --memory=67108864 {IMAGE}",
        f"docker --debug run --name job-1 -e A=1 -v /a:/b -dit --cpus=.5 -m=64m -- {IMAGE}",
        f"  docker   run\t--rm --memory=0.0625g --cpus=0.5   {IMAGE}  ",
    ],
)
def test_flag_spellings(command: str) -> None:
    line = parse_docker_run(command, IMAGE)
    assert line is not None
    assert (line.cpus, line.memory_bytes, line.args) == (0.5, 64 << 20, ())


def test_no_limits_on_the_line() -> None:
    assert parse_docker_run(f"docker run --rm {IMAGE}", IMAGE) == DockerRunLine(IMAGE)


def test_words_after_the_image_are_the_containers_command() -> None:
    line = parse_docker_run(f"docker run --rm {IMAGE} sh -c 'echo a; echo b'", IMAGE)
    assert line is not None and line.args == ("sh", "-c", "echo a; echo b")


@pytest.mark.parametrize(
    ("image", "named"),
    [
        ("alpine", "alpine:latest"),
        ("alpine:latest", "docker.io/library/alpine"),
        ("library/alpine:3", "alpine:3"),
        ("registry.example.com:5000/team/app", "registry.example.com:5000/team/app:latest"),
        ("app@sha256:" + "a" * 64, "app@sha256:" + "a" * 64),
        ("app:1@sha256:" + "b" * 64, "docker.io/app:1@sha256:" + "b" * 64),
    ],
)
def test_the_same_image_in_other_spellings(image: str, named: str) -> None:
    assert same_image(image, named)
    assert parse_docker_run(f"docker run --rm {named}", image) is not None


@pytest.mark.parametrize(
    "command",
    [
        "docker run --rm other:1",  # another image: an ordinary command
        f"docker run --rm {IMAGE}:2",
        f"docker ps {IMAGE}",  # not `run`
        f"docker image run {IMAGE}",
        f"podman run --rm {IMAGE}",
        f"echo docker run {IMAGE}",
        f"docker run --rm --cpus {IMAGE}",  # the flag took the image as its value
        "docker run --rm --cpus",  # a value missing at the end
        "docker run -m",
        f"docker run --rm '{IMAGE}",  # unbalanced quote
        "docker run --rm",
        "docker",
        "",
    ],
)
def test_lines_that_are_not_recognised(command: str) -> None:
    assert parse_docker_run(command, IMAGE) is None


def test_a_different_tag_or_registry_is_another_image() -> None:
    assert not same_image("alpine:3", "alpine:3.19")
    assert not same_image("alpine", "quay.io/alpine")
    assert normalise_image("docker.io/team/app") == "team/app:latest"


def test_invalid_limits_are_ignored() -> None:
    line = parse_docker_run(f"docker run --cpus=lots --memory=much {IMAGE}", IMAGE)
    assert line == DockerRunLine(IMAGE)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("64m", 64 << 20),
        ("64M", 64 << 20),
        ("64mb", 64 << 20),
        ("64MiB", 64 << 20),
        ("1g", 1 << 30),
        ("1.5g", 3 << 29),
        ("512k", 512 << 10),
        ("1000", 1000),
        ("1000b", 1000),
        ("0", None),
        ("-1m", None),
        ("64x", None),
        ("", None),
    ],
)
def test_parse_memory(text: str, value: int | None) -> None:
    assert parse_memory(text) == value


@pytest.mark.parametrize(
    ("text", "value"),
    [("0.5", 0.5), ("2", 2.0), (".25", 0.25), ("0", None), ("-1", None), ("inf", None)],
)
def test_parse_cpus(text: str, value: float | None) -> None:
    assert parse_cpus(text) == value
