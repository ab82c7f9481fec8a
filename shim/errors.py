"""The framework's errors, in the words containerd's users know from the Go shim.

Any shim built on pyrunc.shim reports failures to containerd, which hands the text on to ctr and
the kubelet: Go's `op path: strerror`, os/exec's `exec: "x": executable file not found in $PATH`,
%q quoting. This is the framework's own copy of those rules: the framework imports nothing of
oci/, and oci/ (pyrunc.oci.errors, whose tests hold the two to the same texts) never imports the
framework. An exception already worded so carries `go_worded = True`, whichever copy made it,
and describe() passes it on unchanged.

Imported only where something failed: `start` and `delete` must not pay for it otherwise.
"""

from __future__ import annotations

import os
import stat

__all__ = ["ExecError", "MessageError", "describe", "exec_error", "look_path", "quote",
           "strerror"]


def strerror(code: int | None) -> str:
    """errno's text as Go prints it: the C library's, first letter lowercased (an acronym such
    as "RFS specific error" stays as it is)."""
    if not code:
        return "unknown error"
    text = os.strerror(code)
    return text if text[1:2].isupper() else text[:1].lower() + text[1:]


_GO_ESCAPES = {
    "\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v",
    '"': '\\"', "\\": "\\\\",
}


def quote(text: str) -> str:
    """strconv.Quote, Go's %q: in double quotes, printable characters kept, others escaped;
    a surrogate escape (an undecodable byte) becomes the \\x byte it stood for."""
    parts = ['"']
    for char in text:
        code = ord(char)
        escaped = _GO_ESCAPES.get(char)
        if escaped is not None:
            parts.append(escaped)
        elif 0xDC80 <= code <= 0xDCFF:
            parts.append(f"\\x{code - 0xDC00:02x}")
        elif char.isprintable():
            parts.append(char)
        elif code < 0x80:
            parts.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            parts.append(f"\\u{code:04x}")
        else:
            parts.append(f"\\U{code:08x}")
    parts.append('"')
    return "".join(parts)


class MessageError(OSError):
    """An OSError that reads as its message alone (no `[Errno N]` before it)."""

    go_worded = True

    def __init__(self, code: int | None, message: str) -> None:
        super().__init__(code, message)

    def __str__(self) -> str:
        return str(self.strerror)


class ExecError(OSError):
    """A program that could not be started, as Go's os/exec says it: a bare name not found on
    PATH is `exec: "name": executable file not found in $PATH`; anything that was found but
    failed to run is `fork/exec /path: strerror`. `filename` is the name as given, `path` what
    was run ("" when nothing was found)."""

    go_worded = True

    def __init__(self, name: str, code: int | None, path: str) -> None:
        super().__init__(code, strerror(code), name)
        self.path = path

    def __str__(self) -> str:
        if self.path:
            return f"fork/exec {self.path}: {self.strerror}"
        return f"exec: {quote(self.filename)}: executable file not found in $PATH"


def look_path(name: str, search_path: str | None = None) -> str:
    """exec.LookPath of a bare name: the first entry of PATH (an empty one is ".") with a
    non-directory, executable file of that name; "" when there is none."""
    entries = (os.environ.get("PATH", "") if search_path is None else search_path).split(":")
    for entry in entries:
        candidate = os.path.join(entry or ".", name)
        try:
            mode = os.stat(candidate).st_mode
        except OSError:
            continue
        if mode & 0o111 and not stat.S_ISDIR(mode):
            return candidate
    return ""


def exec_error(name: str, error: OSError, search_path: str | None = None) -> ExecError:
    """Go's words for posix_spawnp(name) having raised `error`: a name with a slash is what was
    run; a bare one is looked up as Go would, to name the file that failed to run, or to say
    that none was found."""
    path = name if "/" in name else look_path(name, search_path)
    return ExecError(name, error.errno, path)


def describe(error: BaseException, op: str = "", path: str = "") -> str:
    """An exception as Go would word it, for a message on its way to containerd.

    Already worded (`go_worded`): its own text. Another OSError: `op path: strerror`, with the
    call `op` when the caller knows it and the path Python recorded (else `path`); a strerror
    that is not the C library's text is kept as written. Anything else: its text, `timeout` for
    a bare TimeoutError, its type's name when it has no text."""
    if getattr(error, "go_worded", False):
        return str(error)
    if isinstance(error, OSError) and error.strerror is not None:
        words = str(error.strerror)
        if error.errno and words == os.strerror(error.errno):
            words = strerror(error.errno)
        named = [str(n) for n in (error.filename, error.filename2) if n is not None]
        where = " ".join(([op] if op else []) + (named or ([path] if path else [])))
        return f"{where}: {words}" if where else words
    text = str(error)
    if not text and isinstance(error, TimeoutError):
        return "timeout"
    return text or type(error).__name__
