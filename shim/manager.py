"""The `start` and `delete` actions: what containerd runs the shim binary for, briefly.

`start` runs with the bundle as its working directory. It binds the shim's socket itself, writes
the bundle's `address` file, starts the long-running shim with the listening socket as fd 3, prints
the address and returns without waiting: containerd dials at once and its first call waits in the
socket's backlog until the long-running shim serves it. If the socket already answers (another
container of the same group started a shim), `start` just hands that address back.

`delete` runs after a shim is gone: the Shim's delete hook cleans up (the runc shim force-deletes
the runc container and unmounts the rootfs), and this prints a binary DeleteResponse (exit status
137, as the Go shim reports).

Both are the framework's: what differs between shims comes from the Shim's hooks (pyrunc.shim.api).
"""

from __future__ import annotations

import errno
import posix
import sys
import time

from pyrunc.shim.address import (
    ADDRESS_FILE,
    SOCKET_DIR,
    bind_socket,
    can_connect,
    path_of,
    socket_address,
    write_address,
)
from pyrunc.shim.paths import exists, join
from pyrunc.shim.placement import adjust_oom_score, read_start_options

# These two actions run for every container, so they import as little as they can: no logging,
# typing, dataclasses, threading or protobuf; socket and hashlib only where needed; and no `os`
# (about 1 ms with the collections.abc it loads): `posix`, the C module behind it, and the path
# functions of shim/paths.py do instead, and os is imported where a rarer path needs more of it.
# Both end through cli._exit.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import _socket

    from pyrunc.shim.api import Shim
    from pyrunc.shim.config import Settings

SIGKILL_STATUS = 128 + 9  # what `delete` reports for a shim that is gone, as the Go shim


def _unlink(path: str) -> None:
    try:  # noqa: SIM105 -- contextlib is one more import on the hot path
        posix.unlink(path)
    except OSError:
        pass


def start(shim: Shim, *, namespace: str, id: str, address: str, debug: bool,
          socket_path: str = "", runtime: str = "") -> int:
    """The `start` action. Prints the address; returns the exit code. (start must print
    nothing but the address: containerd reads its combined output as the address.)"""
    bundle = posix.getcwd()
    runtime = runtime or shim.runtime
    try:
        if not namespace:
            raise ValueError("-namespace is required")
        from pyrunc.shim.config import settings_for

        settings = settings_for(shim)  # a bad file stops us here, before anything is made
        group = _group(shim, settings["grouping"], bundle, id)
        shim_address = socket_address(address, namespace, group)
        path = socket_path or path_of(shim_address)
        listener = _listen_or_join(path)
        if listener is None:  # the group's shim is already running
            write_address(bundle, shim_address)
            print(shim_address, flush=True)
            return 0
        options = read_start_options()
        try:
            write_address(bundle, shim_address)
            child = _start_shim(shim, listener, namespace=namespace, id=id, address=address,
                                debug=debug, options=options, runtime=runtime,
                                settings=settings)
        except BaseException:
            listener.close()
            _unlink(path)
            raise
        listener.close()
        try:
            adjust_oom_score(child)
        except BaseException:
            posix.kill(child, 9)  # SIGKILL, without importing signal
            _unlink(path)
            raise
    except (OSError, ValueError) as e:
        from pyrunc.shim.errors import describe

        print(f"pyrunc start {id}: {describe(e)}", flush=True)
        return 1
    print(shim_address, flush=True)
    return 0


def _group(shim: Shim, grouping: str, bundle: str, id: str) -> str:
    """The group whose shim serves the container: the shim's own choice ("pod": for the runc
    shim, the Go shim's labels), one shim per container, or one per containerd namespace (the
    socket's name already carries the namespace). The shim's hook checks the id either way."""
    group = shim.group(bundle, id)
    if grouping == "container":
        return id
    if grouping == "namespace":
        return "all-of-namespace"
    return group


def _listen_or_join(path: str) -> _socket.socket | None:
    try:
        return bind_socket(path)
    except OSError as e:
        if e.errno != errno.EADDRINUSE:
            raise
    if can_connect(path):
        return None
    posix.unlink(path)  # a stale socket of a shim that died
    return bind_socket(path)


def _start_shim(shim: Shim, listener: _socket.socket, *, namespace: str, id: str,
                address: str, debug: bool, options: bytes, runtime: str, settings: Settings
                ) -> int:
    """Fork the shim from the node's warm parent (which also applies the runtime options);
    without one, spawn it the slow way and start a warm parent for the next containers (unless
    the configuration turns the warm parent off). `runtime` is the name this binary was run as,
    which the shim logs and is titled under; `settings` go to the shim as they are now."""
    from pyrunc.shim import warm

    text = settings.encode()
    warm_on = settings["warm.enabled"]
    variant = warm.variant(settings["warm.idle_timeout"], settings["warm.ksm"])
    pid = None
    if warm_on:
        pid = warm.request_shim(listener, module=shim.module, runtime=runtime,
                                namespace=namespace, id=id, address=address, debug=debug,
                                options=options, settings=text, variant=variant)
    if pid is None:
        pid = _spawn_shim(shim, listener, namespace=namespace, id=id, address=address,
                          debug=debug, runtime=runtime, settings=text)
        try:
            shim.start_options(pid, options)
        except BaseException:
            posix.kill(pid, 9)
            raise
        if warm_on:
            warm.spawn_warm_parent(shim.module, idle_exit=settings["warm.idle_timeout"],
                                   ksm=settings["warm.ksm"], variant=variant)
    return pid


def _spawn_shim(shim: Shim, listener: _socket.socket, *, namespace: str, id: str,
                address: str, debug: bool, runtime: str, settings: str) -> int:
    from pyrunc.shim.spawn import spawn

    # Python names the shim's argv[0] after the module, so the runtime name is passed on: for
    # the shim's log, and for `ps`, where it then shows among containerd's flags.
    argv = [sys.executable, "-I", "-m", shim.module,
            "-namespace", namespace, "-id", id, "-address", address, "-runtime-name", runtime,
            "-settings", settings]
    if debug:
        argv.append("-debug")
    # stdio to /dev/null: containerd waits for EOF on start's output, so the long-running shim
    # must not keep those pipes. A session of its own keeps it out of containerd's signals.
    return spawn(argv, extra_fds=[listener.fileno()], setsid=True)


def _remove_dead_socket(bundle: str) -> None:
    """A shim killed outright leaves its socket file; the Go shim leaves it there for good
    (containerd#5173). Remove it, unless a shim still answers on it (a pod's other containers)."""
    try:
        with open(join(bundle, ADDRESS_FILE)) as f:
            path = path_of(f.read().strip())
    except OSError:
        return
    if path.startswith(SOCKET_DIR + "/") and exists(path) and not can_connect(path):
        _unlink(path)


def delete(shim: Shim, *, namespace: str, id: str, bundle: str, debug: bool) -> int:
    """The `delete` action: the shim cleans up after a shim process that is gone, and this
    prints the DeleteResponse (by hand: protobuf would cost more than the rest together)."""
    bundle = bundle or posix.getcwd()
    try:
        pid = shim.delete(namespace, id, bundle)
    except ValueError as e:
        print(f"pyrunc delete: {e}", file=sys.stderr)
        return 1
    _remove_dead_socket(bundle)
    sys.stdout.buffer.write(encode_delete_response(pid, SIGKILL_STATUS, time.time_ns()))
    sys.stdout.flush()
    return 0


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1  # negative int64s are ten-byte two's complement varints
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_delete_response(pid: int, exit_status: int, exited_at_ns: int) -> bytes:
    """containerd.task.v2.DeleteResponse{pid=1, exit_status=2, exited_at=3 Timestamp} in proto3
    wire format (zero fields left out), without loading protobuf."""
    seconds, nanos = divmod(exited_at_ns, 1_000_000_000)
    timestamp = b""
    if seconds:
        timestamp += b"\x08" + _varint(seconds)
    if nanos:
        timestamp += b"\x10" + _varint(nanos)
    out = b""
    if pid:
        out += b"\x08" + _varint(pid)
    if exit_status:
        out += b"\x10" + _varint(exit_status)
    return out + b"\x1a" + _varint(len(timestamp)) + timestamp
