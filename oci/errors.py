"""Errors in the words containerd's users know: the Go shim's.

containerd passes a shim's error text on to its clients, and people and tools read it (and match
on it) as the Go shim words it: Go's `op path: strerror` for a failed system call
(`open /run/x/config.json: no such file or directory`), os/exec's
`exec: "runc": executable file not found in $PATH` for a program that cannot be started, names in
double quotes where Go formats them with %q. Python's own renderings (`[Errno 2] No such file or
directory: 'runc'`) are never what containerd should see, so every OSError on its way there is
worded here.

An exception worded so carries `go_worded = True`, and describe() passes it on as it is: the
shim framework has its own copy of these rules (pyrunc.shim.errors, since neither package may
import the other), and what one copy worded the other must not word again.

The `delete` action imports this module only when something has failed; it needs nothing that
os has not loaded already.
"""

from __future__ import annotations

import os
import stat


def strerror(code: int | None) -> str:
    """An errno as Go words it: Go's table is the C library's, with a lowercase first letter."""
    if not code:
        return "unknown error"
    text = os.strerror(code)
    if text[1:2].isupper():  # an acronym ("RFS specific error"): Go keeps it
        return text
    return text[:1].lower() + text[1:]


_ESCAPES = {
    '"': '\\"', "\\": "\\\\", "\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
    "\t": "\\t", "\v": "\\v",
}


def quote(text: str) -> str:
    """Go's %q of a string (strconv.Quote): double quotes, printable characters as they are,
    the rest escaped. Bytes that os.fsdecode could not decode (surrogate escapes) come out as
    the \\x bytes they were."""
    out = []
    for char in text:
        code = ord(char)
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif char.isprintable():
            out.append(char)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


class PathError(OSError):
    """Go's *os.PathError: a system call on a path that failed, as `op path: strerror`.

    An OSError (errno, strerror and filename set) whose text is Go's, not Python's.
    """

    go_worded = True

    def __init__(self, op: str, path: str, code: int | None) -> None:
        super().__init__(code, strerror(code), path)
        self.op = op

    def __str__(self) -> str:
        return f"{self.op} {self.filename}: {self.strerror}"


class MessageError(OSError):
    """An OSError whose text is its message alone: Python would put `[Errno N]` before it."""

    go_worded = True

    def __init__(self, code: int | None, message: str) -> None:
        super().__init__(code, message)

    def __str__(self) -> str:
        return str(self.strerror)


class ExecError(OSError):
    """A program that could not be started, in os/exec's words (containerd's go-runc runs runc
    with exec.Command, which looks a bare name up on PATH first):

    - a bare name not found on PATH: `exec: "runc": executable file not found in $PATH`;
    - a path (or a name found on PATH) that fails to execute: `fork/exec /usr/bin/x: permission
      denied`.

    `filename` is the name as given; `path` what was executed, "" when nothing was found.
    """

    go_worded = True

    def __init__(self, name: str, code: int | None, path: str) -> None:
        super().__init__(code, strerror(code), name)
        self.path = path

    def __str__(self) -> str:
        if not self.path:
            return f"exec: {quote(self.filename)}: executable file not found in $PATH"
        return f"fork/exec {self.path}: {self.strerror}"


def look_path(name: str, search_path: str | None = None) -> str:
    """Where Go's exec.LookPath finds a bare name: the first PATH entry holding a file (not a
    directory) with an execute bit; "" if none does. (An empty entry is the current directory.)
    """
    if search_path is None:
        search_path = os.environ.get("PATH", "")
    for directory in search_path.split(os.pathsep):
        candidate = os.path.join(directory or ".", name)
        try:
            mode = os.stat(candidate).st_mode
        except OSError:
            continue
        if not stat.S_ISDIR(mode) and mode & 0o111:
            return candidate
    return ""


def exec_error(name: str, error: OSError, search_path: str | None = None) -> ExecError:
    """What Go would have said where posix_spawnp(name) raised `error`.

    A bare name is looked up as Go does, so that a program found on PATH but unable to run
    (not a valid executable, a script whose interpreter is missing) is named by its full path,
    and one not found at all reads as os/exec's "not found in $PATH".
    """
    code = error.errno
    if "/" in name:
        return ExecError(name, code, name)
    return ExecError(name, code, look_path(name, search_path))


def start_failure(program: str, error: OSError) -> str:
    """Go's words for a ProcessMonitor.spawn of `program` that raised `error`, whichever
    monitor it was: posix_spawn names the program in what it raises, so an OSError naming it
    (and not yet worded) is the program's failure to start; anything else, such as no fds
    left before spawning, is described as it is."""
    if getattr(error, "go_worded", False) or error.filename != program:
        return describe(error)
    return str(exec_error(program, error))


def describe(error: BaseException, op: str = "", path: str = "") -> str:
    """Any exception in Go's words, for a message containerd will pass on.

    An exception marked go_worded (ours, or the framework's) already reads that way. Another
    OSError becomes `op path: strerror`, with `op` the call that failed when the caller knows
    it (Python does not record it) and the path Python recorded, else `path`; a strerror other
    than the C library's (a message given to OSError) is kept as it was written. Anything else
    is its own text; a bare TimeoutError reads `timeout`, another exception without text its
    type's name.
    """
    if getattr(error, "go_worded", False):
        return str(error)
    if isinstance(error, OSError) and error.strerror is not None:
        code = error.errno
        words = str(error.strerror)
        if code and words == os.strerror(code):
            words = strerror(code)
        names = [str(n) for n in (error.filename, error.filename2) if n is not None]
        where = " ".join([*([op] if op else []), *(names or ([path] if path else []))])
        return f"{where}: {words}" if where else words
    text = str(error)
    if isinstance(error, TimeoutError) and not text:
        return "timeout"
    return text or type(error).__name__
