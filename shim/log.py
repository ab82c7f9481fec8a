"""The shim's log, in the logrus text format containerd's own log uses.

The long-running shim writes to the bundle's `log` fifo (containerd created it and copies what it
reads into its own log), so a shim's messages appear in containerd's log next to containerd's:

    time="2026-12-03T08:43:08.770385265Z" level=info msg="container c1: created, pid 424" runtime=…

The module is the logger: `from pyrunc.shim import log`, then `log.info("… %s", x)` with the
method names and %-style arguments of the standard library's `logging`, which the shim does
not import: it and what it pulls in (traceback, string, weakref, warnings) cost the long-running
shim about 0.65 MiB, and a shim needs one destination, one format and a level.

Every line is one write(2) to fd 2 under a lock, so lines from the shim's threads never mix.
While containerd is down nobody reads the fifo and a write fails with EPIPE: the line is dropped
quietly, as the Go shim's logger drops it.
"""

from __future__ import annotations

import os
import time
from _thread import allocate_lock

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# Levels, numbered as the standard library numbers them; trace is below debug.
TRACE, DEBUG, INFO, WARNING, ERROR, FATAL = 5, 10, 20, 30, 40, 50
# The configuration's log_level words (logrus' levels).
LEVELS = {"trace": TRACE, "debug": DEBUG, "info": INFO, "warn": WARNING, "warning": WARNING,
          "error": ERROR, "fatal": FATAL, "panic": FATAL}
WORDS = {TRACE: "trace", DEBUG: "debug", INFO: "info", WARNING: "warning", ERROR: "error",
         FATAL: "fatal"}

_threshold = INFO  # the lowest level written (setup() sets it)
_fields = ""  # ` key=value` for each of the shim's fields (setup() sets them)
_lock = allocate_lock()


def setup(*, debug: bool, fields: dict[str, str], fifo: str | None = None,
          level: str = "info") -> None:
    """Log to fd 2; with fifo, first make the bundle's log fifo the process's fd 2. The level is
    `level` (a log_level word), or debug whenever containerd runs us with -debug (trace stays
    trace). A shim forked from the warm parent calls it again for its own fields and level."""
    global _fields, _threshold
    if fifo is not None:
        try:
            # containerd holds the fifo open for reading, so this open does not block.
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            os.set_blocking(fd, True)
            os.dup2(fd, 2)
            os.close(fd)
        except OSError:
            pass
    _fields = "".join(f" {k}={quote(v)}" for k, v in fields.items() if v)
    number = LEVELS.get(level, INFO)
    if debug and number > DEBUG:
        number = DEBUG
    _threshold = number


def enabled(at: int) -> bool:
    return at >= _threshold


def emit(at: int, msg: str, args: tuple[Any, ...] = (), exc_info: bool = False) -> None:
    """One line at level `at`, if the level lets it through: `msg % args`, and with exc_info the
    exception being handled, with its traceback."""
    if at < _threshold:
        return
    try:
        message = msg % args if args else msg
    except (TypeError, ValueError, KeyError):  # a mistake in a log call must not crash the shim
        message = f"{msg!r} % {args!r}"
    if exc_info:
        import traceback

        message = f"{message}\n{traceback.format_exc().rstrip()}"
    data = (line(at, message) + "\n").encode("utf-8", "backslashreplace")
    with _lock:
        try:
            while data:
                data = data[os.write(2, data):]
        except OSError:
            pass


def line(at: int, message: str, when: float | None = None) -> str:
    """`time="…" level=… msg="…"` and the fields, as logrus writes it."""
    when = time.time() if when is None else when
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when))
    nanos = int((when % 1) * 1e9)
    return (f'time="{stamp}.{nanos:09d}Z" level={WORDS.get(at, "info")} msg={quote(message)}'
            f"{_fields}")


def quote(value: str) -> str:
    if value and all(c.isalnum() or c in "-._/:" for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def trace(msg: str, *args: Any) -> None:
    emit(TRACE, msg, args)


def debug(msg: str, *args: Any) -> None:
    emit(DEBUG, msg, args)


def info(msg: str, *args: Any) -> None:
    emit(INFO, msg, args)


def warning(msg: str, *args: Any) -> None:
    emit(WARNING, msg, args)


def error(msg: str, *args: Any) -> None:
    emit(ERROR, msg, args)


def exception(msg: str, *args: Any) -> None:
    """error(), with the exception being handled and its traceback."""
    emit(ERROR, msg, args, exc_info=True)


def log(at: int, msg: str, *args: Any) -> None:
    emit(at, msg, args)
