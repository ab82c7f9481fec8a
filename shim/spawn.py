"""Starting child processes with posix_spawn, and reading their wait status.

Kept apart from the reaper so that the short-lived `start` and `delete` actions can start a
process without loading the reaper's event-loop machinery.
"""

from __future__ import annotations

import fcntl
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal
    from collections.abc import Mapping, Sequence
else:  # (not signal: its enum wrappers cost the `delete` action about 1.8 ms)
    import _signal as signal


def exit_status(wait_status: int) -> int:
    """As a shell reports it: the exit code, or 128 + the signal that killed the process."""
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    if os.WIFEXITED(wait_status):
        return os.WEXITSTATUS(wait_status)
    return 255


def spawn(
    argv: Sequence[str],
    *,
    stdin: int | None = None,
    stdout: int | None = None,
    stderr: int | None = None,
    env: Mapping[str, str] | None = None,
    extra_fds: Sequence[int] = (),
    setsid: bool = False,
) -> int:
    """posix_spawn with fds 0-2 from the arguments (None: /dev/null) and extra_fds as 3, 4, ….

    Every other fd stays behind: Python opens them close-on-exec. The child starts with default
    signal dispositions and an empty signal mask, whatever the shim set for itself.

    A program that cannot be started raises ExecError, which reads as Go's os/exec does
    (`exec: "runc": executable file not found in $PATH`): containerd passes the text on, and
    its users look for the program's name in double quotes.
    """
    wanted: list[tuple[int, int | None]] = [(0, stdin), (1, stdout), (2, stderr)]
    wanted += [(3 + i, fd) for i, fd in enumerate(extra_fds)]
    # Copy every source above all targets first, so that one dup2 never overwrites a source
    # that another still has to copy from.
    floor = len(wanted) + 10
    dups: list[int] = []
    actions: list[tuple[int, int, int] | tuple[int, int, str, int, int]] = []
    try:
        for target, fd in wanted:
            if fd is None:
                actions.append((os.POSIX_SPAWN_OPEN, target, os.devnull, os.O_RDWR, 0))
            else:
                dup = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor)
                dups.append(dup)
                actions.append((os.POSIX_SPAWN_DUP2, dup, target))
        try:
            return os.posix_spawnp(
                argv[0],
                list(argv),
                dict(os.environ if env is None else env),
                file_actions=actions,
                setsid=setsid,
                setsigdef=_DEFAULT_SIGNALS,
                setsigmask=(),
            )
        except OSError as e:
            from pyrunc.shim.errors import exec_error  # only now: `delete` runs through here

            raise exec_error(argv[0], e) from e
    finally:
        for dup in dups:
            os.close(dup)


# Signals reset to their default action in children (Python ignores SIGPIPE, for one). glibc
# keeps 32 and 33 for itself, and real-time signals are never ignored by the shim.
_DEFAULT_SIGNALS = tuple(
    s for s in range(1, 32) if s not in (signal.SIGKILL, signal.SIGSTOP)
)


def run_to_completion(argv: list[str]) -> tuple[int, str]:
    """Run a command to completion and return its status and combined output, waiting for it
    itself: for the `delete` action, which has no reaper (its one child is this)."""
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = spawn(argv, stdout=w, stderr=w)
    except BaseException:
        os.close(r)
        raise
    finally:
        os.close(w)
    with os.fdopen(r, "rb") as output:
        text = output.read().decode(errors="replace").strip()
    _, status = os.waitpid(pid, 0)
    return exit_status(status), text
