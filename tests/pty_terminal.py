"""Run a program on a real pseudo-terminal and read its screen output, as a user would.

Standard library only (``pty``). A reader thread collects everything the program
writes and answers cursor-position requests (ESC [ 6 n) the way a terminal does, so
prompt_toolkit and rich behave as they do for a person at a terminal. ``text()``
is the output with escape sequences removed; ``expect`` waits on it with a timeout.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Sequence
from pathlib import Path

_CSI_FORWARD = re.compile(rb"\x1b\[(\d*)C")
_ESCAPES = re.compile(
    rb"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI ... final byte
    rb"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"  # OSC ... BEL / ST
    rb"|\x1b[PX^_][^\x1b]*\x1b\\"  # DCS/SOS/PM/APC ... ST
    rb"|\x1b[()*+][0-9A-Za-z]"  # character set designation
    rb"|\x1b[@-Z\\-_=>78]"  # two-byte sequences
    rb"|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"  # other control characters
)
CPR_REQUEST = b"\x1b[6n"

# Runs first in the child: a new session whose controlling terminal is the pty, as a
# login shell would set up, so Ctrl-C typed on the terminal sends SIGINT.
_CTTY_SHIM = (
    "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "os.execvp(sys.argv[1], sys.argv[1:])"
)


def strip_escapes(data: bytes) -> str:
    """Terminal output -> its text (cursor-forward moves become spaces)."""
    data = _CSI_FORWARD.sub(lambda m: b" " * int(m.group(1) or 1), data)
    return _ESCAPES.sub(b"", data).decode("utf-8", "replace")


class PtyTerminal:
    def __init__(
        self,
        argv: Sequence[str],
        env: dict[str, str],
        cwd: Path | None = None,
        rows: int = 50,
        columns: int = 160,
    ) -> None:
        self.rows, self.columns = rows, columns
        master_fd, slave_fd = pty.openpty()
        fcntl.ioctl(slave_fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        env = {**env, "TERM": env.get("TERM", "xterm-256color"), "COLUMNS": str(columns)}
        env["LINES"] = str(rows)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _CTTY_SHIM, *argv],
                stdin=slave_fd,
                stdout=slave_fd,
                stderr=slave_fd,
                env=env,
                cwd=cwd,
                start_new_session=True,
                close_fds=True,
            )
        finally:
            os.close(slave_fd)
        self.fd = master_fd
        self._raw = bytearray()
        self._lock = threading.Lock()
        self._cpr_answered = 0
        self._closed = False
        self._reader = threading.Thread(target=self._read_loop, name="pty-reader", daemon=True)
        self._reader.start()

    # -- I/O ----------------------------------------------------------------------------------

    def _read_loop(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:  # EIO: the program closed the terminal (exited)
                return
            if not chunk:
                return
            with self._lock:
                self._raw += chunk
                requests = self._raw.count(CPR_REQUEST)
                answer = requests - self._cpr_answered
                self._cpr_answered = requests
            for _ in range(answer):
                self.write(f"\x1b[{self.rows};1R")

    def write(self, text: str | bytes) -> None:
        data = text.encode() if isinstance(text, str) else text
        if not self._closed:
            with contextlib.suppress(OSError):
                os.write(self.fd, data)

    def type(self, text: str, delay: float = 0.0) -> None:
        """Type ``text`` (a human types one key at a time; delay 0 pastes it)."""
        if not delay:
            self.write(text)
            return
        for char in text:
            self.write(char)
            time.sleep(delay)

    def line(self, text: str) -> int:
        """Type a line and Enter; returns the output mark from before it."""
        mark = self.mark()
        self.write(text + "\r")
        return mark

    # -- reading ------------------------------------------------------------------------------

    def raw(self) -> bytes:
        with self._lock:
            return bytes(self._raw)

    def mark(self) -> int:
        with self._lock:
            return len(self._raw)

    def text(self, since: int = 0) -> str:
        return strip_escapes(self.raw()[since:])

    def expect(self, pattern: str, since: int = 0, timeout: float = 15.0) -> re.Match[str]:
        """Wait until the text written since ``since`` matches the regex ``pattern``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            match = regex.search(self.text(since))
            if match:
                return match
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout} s waiting for {pattern!r} on the terminal; "
                    f"it shows:\n{self.text(since)[-4000:]}"
                )
            if self.proc.poll() is not None and not self._reader.is_alive():
                raise AssertionError(
                    f"the program exited ({self.proc.returncode}) before {pattern!r} showed; "
                    f"it showed:\n{self.text(since)[-4000:]}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.1)

    def wait(self, timeout: float = 20.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"the program did not exit in {timeout} s; it shows:\n{self.text()[-4000:]}"
            ) from None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(5)
        if not self._closed:
            self._closed = True
            os.close(self.fd)
