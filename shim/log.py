"""The shim's log, in the logrus text format containerd's own log uses.

The long-running shim writes to the bundle's `log` fifo (containerd created it and copies what it
reads into its own log), so a shim's messages appear in containerd's log next to containerd's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from typing import ClassVar


class LogrusFormatter(logging.Formatter):
    """`time="…" level=info msg="…" runtime=io.containerd.pyrunc.v1 …`"""

    LEVELS: ClassVar[dict[str, str]] = {"WARNING": "warning", "CRITICAL": "fatal"}

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__()
        self.set_fields(fields)

    def set_fields(self, fields: dict[str, str]) -> None:
        self.fields = "".join(f" {k}={_quote(v)}" for k, v in fields.items() if v)

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        level = self.LEVELS.get(record.levelname, record.levelname.lower())
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        nanos = int((record.created % 1) * 1e9)
        return f'time="{stamp}.{nanos:09d}Z" level={level} msg={_quote(message)}{self.fields}'


def _quote(value: str) -> str:
    if value and all(c.isalnum() or c in "-._/:" for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


# The configuration's log_level words (logrus' levels) as Python's; trace is below debug.
LEVELS = {"trace": 5, "debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
          "warning": logging.WARNING, "error": logging.ERROR, "fatal": logging.CRITICAL,
          "panic": logging.CRITICAL}
logging.addLevelName(LEVELS["trace"], "TRACE")


def setup(*, debug: bool, fields: dict[str, str], fifo: str | None = None,
          level: str = "info") -> None:
    """Log to stderr; with fifo, first make the bundle's log fifo the process's stderr. The
    level is `level` (a log_level word), or debug whenever containerd runs us with -debug.

    Called again, it keeps the handler and changes only what differs: a shim forked from the warm
    parent, which set logging up before forking, then writes to few of the pages it shares."""
    if fifo is not None:
        with contextlib.suppress(OSError):
            # containerd holds the fifo open for reading, so this open does not block.
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            os.set_blocking(fd, True)
            os.dup2(fd, 2)
            os.close(fd)
    # While containerd is down nobody reads the fifo and a write fails with EPIPE; the Go shim's
    # logger drops such a line quietly, and so do we (logging would otherwise print a
    # "--- Logging error ---" report into the same fifo, which containerd shows once it is back).
    logging.raiseExceptions = False
    root = logging.getLogger()
    handler = root.handlers[0] if len(root.handlers) == 1 else None
    formatter = handler.formatter if handler is not None else None
    if isinstance(formatter, LogrusFormatter) and getattr(handler, "stream", None) is sys.stderr:
        formatter.set_fields(fields)
    else:
        handler = logging.StreamHandler()  # sys.stderr, whatever fd 2 is when it writes
        handler.setFormatter(LogrusFormatter(fields))
        root.handlers[:] = [handler]
    number = logging.DEBUG if debug else LEVELS.get(level, logging.INFO)
    if debug and level == "trace":
        number = LEVELS["trace"]
    if root.level != number:
        root.setLevel(number)  # (this clears every logger's cache: only when it changes)
