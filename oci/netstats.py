"""Network statistics of a container's network namespace, read over netlink with pyroute2.

pyroute2 costs about 20 MiB and most of a second to import: far more than a shim may carry per
container. So shims never import it. One helper per node does (`python -I -m pyrunc.oci.netstats`):
the first Stats that needs it starts it, and it exits after IDLE_EXIT seconds without a request.
A shim hands it the container's network namespace as an open fd over a unix socket (SCM_RIGHTS,
0600, in pyrunc's 0700 run directory, peers of the helper's own uid and gid only). pyroute2 opens
its netlink socket inside that namespace from a short-lived forked child (`IPRoute(netns=...)`),
so not even the helper's threads enter it, and the shim's never do. The reply is one line per
interface: its name and the eight counters of the metrics' NetworkStat.
"""

from __future__ import annotations

import os
import socket
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pyrunc.oci.monitor import ProcessMonitor

SOCKET = "/run/pyrunc/netstats.sock"
VERSION = b"pyrunc-netstats-1"
IDLE_EXIT = 60.0
START_TIMEOUT = 15.0  # for a helper just started to serve (it imports pyroute2)
# The counters of containerd's NetworkStat (metrics v1 and v2), in its field order.
COUNTERS = ("rx_bytes", "rx_packets", "rx_errors", "rx_dropped", "tx_bytes", "tx_packets",
            "tx_errors", "tx_dropped")

Interface = tuple[str, dict[str, int]]  # (name, {counter: value})


class NetstatsError(Exception):
    pass


def has_own_netns(pid: int) -> bool:
    """Whether process `pid` has a network namespace other than this process's (the host's)."""
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino != os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return False


def read(pid: int, monitor: ProcessMonitor, path: str = SOCKET) -> list[Interface]:
    """The interfaces of `pid`'s network namespace and their counters, from the node's helper
    (started through `monitor` if none answers)."""
    try:
        ns = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        from pyrunc.oci.errors import describe

        raise NetstatsError(describe(e, "open")) from e
    try:
        try:
            return _ask(ns, path)
        except (FileNotFoundError, ConnectionRefusedError):
            pass
        import sys

        monitor.spawn([sys.executable, "-I", "-m", "pyrunc.oci.netstats", path])
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                return _ask(ns, path)
            except (FileNotFoundError, ConnectionRefusedError) as e:
                if time.monotonic() > deadline:
                    raise NetstatsError("the network statistics helper did not start") from e
                time.sleep(0.05)
    finally:
        os.close(ns)


def _ask(ns: int, path: str) -> list[Interface]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(10.0)
        conn.connect(path)
        socket.send_fds(conn, [VERSION + b"\n"], [ns])
        conn.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    return decode_reply(data)


def encode_reply(interfaces: list[Interface]) -> bytes:
    return b"".join(
        "\t".join([name, *(str(int(counters.get(c, 0))) for c in COUNTERS)]).encode() + b"\n"
        for name, counters in interfaces) + b"end\n"


def decode_reply(data: bytes) -> list[Interface]:
    text = data.decode(errors="replace")
    if text.startswith("error "):
        raise NetstatsError(text.removeprefix("error ").strip())
    lines = text.splitlines()
    if not lines or lines[-1] != "end":
        raise NetstatsError("the network statistics helper gave no answer")
    interfaces = []
    for line in lines[:-1]:
        name, *values = line.split("\t")
        if len(values) != len(COUNTERS) or not all(v.isdigit() for v in values):
            raise NetstatsError(f"not a network statistics line: {line!r}")
        interfaces.append((name, dict(zip(COUNTERS, map(int, values), strict=True))))
    return interfaces


# --- the helper ------------------------------------------------------------------------------


def links_of(namespace: str) -> list[Interface]:
    """Every interface of the network namespace at path `namespace`, with its 64-bit counters."""
    from pyroute2 import IPRoute

    found = []
    with IPRoute(netns=namespace) as ipr:
        for link in ipr.get_links():
            stats = link.get("IFLA_STATS64") or link.get("IFLA_STATS") or {}
            found.append((str(link.get("IFLA_IFNAME")), {c: int(stats.get(c, 0))
                                                         for c in COUNTERS}))
    return found


def serve(path: str = SOCKET, idle_exit: float = IDLE_EXIT) -> int:
    """Answer requests one at a time until idle for `idle_exit` seconds."""
    import contextlib
    import fcntl
    import struct

    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    lock = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return 0  # another helper serves
    import pyroute2  # noqa: F401 -- before serving: the first request must not wait for it

    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        listener.bind(path)
    finally:
        os.umask(old_umask)
    listener.listen(64)
    listener.settimeout(idle_exit)
    import signal
    import sys

    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))  # still remove the socket
    ucred = struct.Struct("3i")
    try:
        while True:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                return 0
            with conn:
                raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, ucred.size)
                _, uid, gid = ucred.unpack(raw)
                if (uid, gid) != (os.geteuid(), os.getegid()):
                    continue
                with contextlib.suppress(OSError):
                    conn.sendall(_answer(conn))
    finally:
        for leftover in (path, path + ".lock"):
            with contextlib.suppress(OSError):
                os.unlink(leftover)
        listener.close()


def _answer(conn: socket.socket) -> bytes:
    conn.settimeout(5.0)
    message, fds, _, _ = socket.recv_fds(conn, 1024, 1)
    try:
        if message.strip() != VERSION or len(fds) != 1:
            return b"error not a pyrunc network statistics request\n"
        try:
            return encode_reply(links_of(f"/proc/self/fd/{fds[0]}"))
        except Exception as e:  # pyroute2's failures are many kinds: each is one answer
            return f"error {type(e).__name__}: {e}".replace("\n", " ").encode() + b"\n"
    finally:
        for fd in fds:
            os.close(fd)


if __name__ == "__main__":
    import sys

    raise SystemExit(serve(sys.argv[1] if len(sys.argv) > 1 else SOCKET))
