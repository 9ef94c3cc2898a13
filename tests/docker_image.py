"""A Docker image for the tests, built locally (never pulled): ``cloudai-test-busybox:1``.

Its root filesystem is Debian's static busybox (``/usr/bin/busybox``, package
``busybox-static``) with a link per applet, and an entry point of its own,
``/entrypoint.sh``, which prints its arguments and the container's CPU and memory limits
as the kernel applies them (cgroup v1 or v2)::

    cloudai-test-busybox entrypoint: default-cmd
    memory limit: 67108864
    cpu limit: 50000 100000

Building it takes well under a second and is idempotent (an existing image is kept).
No engine, or no busybox: the Docker tests are skipped with the reason, or fail where the
environment variable CI is set (``.ci/run`` starts dockerd there).
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from typing import Any

import pytest

TEST_IMAGE = "cloudai-test-busybox:1"
BUSYBOX = "/usr/bin/busybox"
ENTRYPOINT_BANNER = "cloudai-test-busybox entrypoint:"

_ENTRYPOINT = b"""#!/bin/sh
echo "cloudai-test-busybox entrypoint: $*"
if [ -r /sys/fs/cgroup/memory.max ]; then
  echo "memory limit: $(cat /sys/fs/cgroup/memory.max)"
elif [ -r /sys/fs/cgroup/memory/memory.limit_in_bytes ]; then
  echo "memory limit: $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes)"
fi
if [ -r /sys/fs/cgroup/cpu.max ]; then
  echo "cpu limit: $(cat /sys/fs/cgroup/cpu.max)"
elif [ -r /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]; then
  cpu=/sys/fs/cgroup/cpu
  echo "cpu limit: $(cat $cpu/cpu.cfs_quota_us) $(cat $cpu/cpu.cfs_period_us)"
fi
"""

_DOCKERFILE = b"""FROM scratch
ADD rootfs.tar /
ENV PATH=/bin
ENTRYPOINT ["/bin/sh", "/entrypoint.sh"]
CMD ["default-cmd"]
LABEL cloudai.test="1"
"""


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(reason: str) -> None:
    """Skip the test, or fail it in CI, where the engine must be up."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set: .ci/run starts dockerd)", pytrace=False)
    pytest.skip(f"{reason}; .ci/run shows how to install and start dockerd")


def _add(tar: tarfile.TarFile, name: str, data: bytes = b"", mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))


def _build_context() -> io.BytesIO:
    applets = subprocess.run(
        [BUSYBOX, "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    rootfs = io.BytesIO()
    with tarfile.open(fileobj=rootfs, mode="w") as tar:
        for directory in ("bin", "tmp", "etc"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if directory == "tmp" else 0o755
            tar.addfile(info)
        with open(BUSYBOX, "rb") as f:
            _add(tar, "bin/busybox", f.read())
        for applet in applets:
            if applet != "busybox":
                link = tarfile.TarInfo(f"bin/{applet}")
                link.type, link.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(link)
        _add(tar, "entrypoint.sh", _ENTRYPOINT)
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        _add(tar, "rootfs.tar", rootfs.getvalue(), 0o644)
        _add(tar, "Dockerfile", _DOCKERFILE, 0o644)
    context.seek(0)
    return context


def engine_client() -> Any:
    """A client of the local engine; skips (fails in CI) when none answers."""
    import docker

    from cloudai.worker.runtimes.docker import engine_error

    problem = ""
    try:
        client = docker.from_env(timeout=10)
        client.ping()
    except Exception as exc:
        problem = engine_error(exc)
    if problem:
        unavailable(problem)
    return client


def ensure_test_image(client: Any) -> str:
    """Build ``TEST_IMAGE`` unless the engine has it; returns its name."""
    import docker.errors

    try:
        client.images.get(TEST_IMAGE)
        return TEST_IMAGE
    except docker.errors.ImageNotFound:
        pass
    if not os.access(BUSYBOX, os.X_OK):
        unavailable(f"{BUSYBOX} is missing (Debian package busybox-static) to build {TEST_IMAGE}")
    client.images.build(fileobj=_build_context(), custom_context=True, tag=TEST_IMAGE, rm=True)
    return TEST_IMAGE


def containers_of(client: Any, task_id: str) -> list[Any]:
    """The containers (running or not) the worker made for ``task_id``."""
    return list(client.containers.list(all=True, filters={"label": f"cloudai.task_id={task_id}"}))
