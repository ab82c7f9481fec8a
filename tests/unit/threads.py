"""Helpers for the tests of code that runs in threads of its own (the stdio and console relays)."""

from __future__ import annotations

import threading
from collections.abc import Callable

TIMEOUT = 30


def in_thread(target: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    """Run target in a thread of its own; its result (or exception) lands in the list."""
    result: list[object] = []

    def run() -> None:
        try:
            result.append(target())
        except BaseException as e:  # handed to the test to raise
            result.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def joined(thread: threading.Thread, result: list[object], timeout: float = TIMEOUT) -> object:
    thread.join(timeout)
    assert not thread.is_alive(), "still running"
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


def relay_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("relay-")]


def open_fifo_reader(path: str) -> int:
    """Open a fifo for reading as containerd does (its fifo package: a blocking open(2) in a
    goroutine), returned non-blocking: the open returns once the shim's writer is there, so a
    first read never sees the EOF of a fifo that nobody has written to yet."""
    import os

    fd = joined(*in_thread(lambda: os.open(path, os.O_RDONLY | os.O_CLOEXEC)))
    assert isinstance(fd, int)
    os.set_blocking(fd, False)
    return fd


def open_late_reader(path: str, wait: float = 5) -> tuple[int, bool]:
    """Open a fifo for reading, blocking, as containerd's reader would if it came late; return
    the fd (blocking) and whether the open was stuck, waiting for a writer, after `wait`
    seconds. A stuck open is freed (a writer that comes and goes ends its wait), so that no
    thread is left behind, and the caller should fail the test."""
    import os

    opener = in_thread(lambda: os.open(path, os.O_RDONLY | os.O_CLOEXEC))
    opener[0].join(wait)
    stuck = opener[0].is_alive()
    if stuck:
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    fd = joined(*opener)
    assert isinstance(fd, int)
    return fd, stuck
