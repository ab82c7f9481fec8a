"""Where `start` puts a new long-running shim: an OOM score just above containerd's, and the
cgroup a shim's runtime options may name (move_to_cgroup, for a Shim's start_options hook).

Used by `start` for a shim it spawned and by the warm parent for one it forked.
"""

from __future__ import annotations

import posix
import sys


def read_start_options() -> bytes:
    """containerd hands the runtime options to `start` on stdin, as a binary Any."""
    if sys.stdin is None or sys.stdin.isatty():
        return b""
    return sys.stdin.buffer.read()


def move_to_cgroup(pid: int, path: str, root: str = "/sys/fs/cgroup") -> None:
    """Put pid into cgroup `path` of every hierarchy that has it (v1), or of the unified one."""
    import os

    relative = path.strip("/")
    targets = [os.path.join(root, relative)]
    if not os.path.exists(os.path.join(root, "cgroup.controllers")):  # v1 or hybrid
        targets = [os.path.join(root, entry, relative) for entry in sorted(os.listdir(root))
                   if not os.path.islink(os.path.join(root, entry))]
    moved = 0
    for target in targets:
        procs = os.path.join(target, "cgroup.procs")
        if os.path.exists(procs):
            with open(procs, "w") as f:
                f.write(str(pid))
            moved += 1
    if not moved:
        raise ValueError(f"shim cgroup {path} does not exist")


def adjust_oom_score(pid: int) -> None:
    """The shim should be killed before containerd: containerd's oom_score_adj plus one."""
    try:
        with open(f"/proc/{posix.getppid()}/oom_score_adj") as f:
            score = int(f.read().strip())
        with open(f"/proc/{pid}/oom_score_adj", "w") as f:
            f.write(str(min(score + 1, 1000)))
    except (OSError, ValueError) as e:  # as the Go shim: start fails
        from pyrunc.shim.errors import MessageError, describe

        raise MessageError(
            getattr(e, "errno", None), f"failed to adjust OOM score for shim {pid}: {describe(e)}"
        ) from e
