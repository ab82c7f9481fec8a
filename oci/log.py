"""oci/'s log: `from pyrunc.oci import log`, then `log.info("… %s", x)`.

oci/ does not write log lines itself: it hands each one to the sink of the program that uses it
(`use`), which decides the format, the destination and the level. The runc shim hands it the
framework's `pyrunc.shim.log.emit`, so oci/'s lines are the shim's. Until a sink is set (oci/
used on its own, or in a test), lines at warning and above go to fd 2 as `level: message`.
"""

from __future__ import annotations

import contextlib
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    # (level, message, its %-arguments, whether to add the exception being handled)
    Sink = Callable[[int, str, tuple[Any, ...], bool], None]

DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40  # numbered as the standard library's levels


def _plain(at: int, msg: str, args: tuple[Any, ...], exc_info: bool) -> None:
    if at >= WARNING:
        try:
            text = msg % args if args else msg
        except (TypeError, ValueError, KeyError):
            text = f"{msg!r} % {args!r}"
        word = {WARNING: "warning", ERROR: "error"}.get(at, "fatal")
        with contextlib.suppress(OSError):
            os.write(2, f"{word}: {text}\n".encode("utf-8", "backslashreplace"))


_sink: Sink = _plain


def use(sink: Sink) -> None:
    """Send oci/'s log lines to `sink` from now on."""
    global _sink
    _sink = sink


def debug(msg: str, *args: Any) -> None:
    _sink(DEBUG, msg, args, False)


def info(msg: str, *args: Any) -> None:
    _sink(INFO, msg, args, False)


def warning(msg: str, *args: Any) -> None:
    _sink(WARNING, msg, args, False)


def error(msg: str, *args: Any) -> None:
    _sink(ERROR, msg, args, False)


def exception(msg: str, *args: Any) -> None:
    """error(), with the exception being handled and its traceback."""
    _sink(ERROR, msg, args, True)
