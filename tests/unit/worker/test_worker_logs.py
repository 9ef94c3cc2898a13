from __future__ import annotations

from pathlib import Path

from cloudai.worker.runtimes.logs import BoundedLog, render_logs


def test_bounded_log_keeps_everything_under_the_limit(tmp_path: Path) -> None:
    log = BoundedLog(tmp_path / "out.log", 100)
    log.write(b"hello ")
    log.write(b"world")
    assert log.tail() == (b"hello world", 0)
    log.close()
    assert log.tail() == (b"hello world", 0)


def test_bounded_log_keeps_the_last_limit_bytes(tmp_path: Path) -> None:
    log = BoundedLog(tmp_path / "out.log", 100)
    data = bytes(i % 251 for i in range(10_000))
    for start in range(0, len(data), 7):  # many small writes force compactions
        log.write(data[start : start + 7])
    tail, dropped = log.tail()
    assert tail == data[-100:]
    assert dropped == len(data) - 100
    assert (tmp_path / "out.log").stat().st_size <= 200  # the file stays bounded
    log.close()


def test_bounded_log_one_write_larger_than_the_limit(tmp_path: Path) -> None:
    log = BoundedLog(tmp_path / "out.log", 10)
    log.write(b"abc")
    log.write(b"0123456789ABCDEF")
    log.write(b"")
    assert log.tail() == (b"6789ABCDEF", 9)


def test_render_logs_complete_output_ends_with_the_footer() -> None:
    text, truncated = render_logs(b"line 1\nline 2", 0, "exit code 3")
    assert text == "line 1\nline 2\n[cloudai] exit code 3\n"
    assert truncated is False
    assert render_logs(b"", 0, "exit code 0") == ("[cloudai] exit code 0\n", False)


def test_render_logs_marks_truncation_and_never_splits_a_character() -> None:
    tail = "é".encode()[1:] + b"rest\n"  # cut inside a two-byte character
    text, truncated = render_logs(tail, 5000, "exit code 0")
    assert truncated is True
    lines = text.splitlines()
    assert lines[0].startswith("[cloudai] output truncated: the first 5000 bytes were dropped")
    assert lines[1] == "rest"
    assert "\ufffd" not in text
    assert lines[-1] == "[cloudai] exit code 0"


def test_render_logs_replaces_invalid_utf8() -> None:
    text, _ = render_logs(b"bad \xff byte\n", 0, "exit code 0")
    assert text.startswith("bad \ufffd byte\n")
