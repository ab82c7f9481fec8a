"""Path functions with os.path's results, built on posix alone.

`start` and `delete` run for every container, and importing os (with the collections.abc it
loads) would be about a third of what they may cost over the bare interpreter. The framework's
own copy: oci/bundle.py has the same functions for oci/, and the unit tests hold both to
posixpath's answers.
"""

from __future__ import annotations

import posix

__all__ = ["dirname", "exists", "is_dir", "join", "normpath"]


def join(path: str, *parts: str) -> str:
    """posixpath.join of str parts: an absolute part starts over."""
    for part in parts:
        if part[:1] == "/":
            path = part
        elif path and path[-1:] != "/":
            path = f"{path}/{part}"
        else:
            path += part
    return path


def dirname(path: str) -> str:
    """posixpath.dirname: everything up to the last '/', trailing slashes dropped unless the
    head is nothing but slashes."""
    head = path[: path.rfind("/") + 1]
    stripped = head.rstrip("/")
    return stripped if stripped else head


def normpath(path: str) -> str:
    """posixpath.normpath. Paths from containerd are normal already (no empty, '.' or '..'
    part): those come back as they are; only others load posixpath (and with it os)."""
    body = path[1:] if path[:1] == "/" else path
    if body and all(part not in ("", ".", "..") for part in body.split("/")):
        return path
    import posixpath

    return posixpath.normpath(path)


def exists(path: str) -> bool:
    """os.path.exists."""
    try:
        posix.stat(path)
    except (OSError, ValueError):
        return False
    return True


def is_dir(path: str) -> bool:
    """os.path.isdir."""
    try:
        return posix.stat(path).st_mode & 0o170000 == 0o040000
    except (OSError, ValueError):
        return False
