"""The shim's socket and address: how a group's socket is named, bound and probed, and the
bundle's `address` file containerd reads it back from.

Imported by `start` (on every container's path) and by the long-running shim: no `os`, no
`socket` module (see bind_socket).
"""

from __future__ import annotations

import errno
import posix

from pyrunc.shim.paths import dirname, is_dir, join, normpath

TYPE_CHECKING = False
if TYPE_CHECKING:
    import _socket

SOCKET_DIR = "/run/containerd/s"
MAX_SOCKET_PATH = 106  # sun_path is 108 bytes with its NUL; Go refuses longer than 106
ADDRESS_FILE = "address"


def socket_address(containerd_address: str, namespace: str, group: str) -> str:
    """`unix:///run/containerd/s/<sha256 of address/namespace/group>`, as the Go shim names it."""
    joined = normpath(join(containerd_address, namespace, group))
    return f"unix://{SOCKET_DIR}/{sha256_hex(joined.encode())}"


def sha256_hex(data: bytes) -> str:
    try:
        from _sha256 import sha256  # type: ignore[import-not-found]  # cheaper than hashlib
    except ImportError:
        from hashlib import sha256
    return str(sha256(data).hexdigest())


def path_of(address: str) -> str:
    return address.removeprefix("unix://")


def bind_socket(path: str) -> _socket.socket:
    """A listening unix socket file, mode 0600 from the start (never an abstract socket).

    It is the C module's socket (`_socket`), not the `socket` module's: that module alone costs
    `start` a quarter of its own time to import. Wrap it with socket.socket(fileno=s.detach())
    where the richer type is needed.
    """
    if len(path.encode()) > MAX_SOCKET_PATH:  # in the Go shim's words
        from pyrunc.shim.errors import MessageError, quote

        raise MessageError(errno.ENAMETOOLONG,
                           f"{quote(path)}: unix socket path too long (> {MAX_SOCKET_PATH})")
    import _socket

    directory = dirname(path)
    if not is_dir(directory):  # (os.makedirs leaves an existing one as it is)
        import os

        os.makedirs(directory, mode=0o700, exist_ok=True)
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    old_umask = posix.umask(0o177)
    try:
        sock.bind(path)
    except BaseException:
        sock.close()
        raise
    finally:
        posix.umask(old_umask)
    posix.chmod(path, 0o600)
    sock.listen(128)
    return sock


def can_connect(path: str, timeout: float = 1.0) -> bool:
    import _socket

    probe = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        probe.settimeout(timeout)
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def write_address(bundle: str, address: str) -> None:
    path = join(bundle, ADDRESS_FILE)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(address)
    posix.replace(tmp, path)
