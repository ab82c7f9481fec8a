"""The warm parent: one per node, it forks the long-running shims, already warmed up.

A new Python shim would spend most of its start-up importing protobuf and its own modules,
and each would hold its own copy of all that. The warm parent imports everything once,
freezes the garbage collector's view of those objects, and forks one child per `start`: the child
is a shim exactly like one started from scratch (one process per container or pod, in a session
of its own, with the bundle as working directory and containerd's environment), but it is ready
in a few milliseconds and shares the parent's pages copy-on-write.

CPython writes to the objects it runs (reference counts, the code it specialises), and every
write copies a page. So that a shim copies as few as it can, the parent does before forking what
would otherwise be done in each child: it runs each shim's prepare hook (the runc shim rehearses
its hot paths, rehearsal.py), sets up logging, fills the allocator's free blocks (so that a
child's new objects go to pages of its own), and takes on the environment of the request. Its
memory is also offered to the kernel's samepage merging, which, when the node runs it, shares
again the pages shims copied but did not change for good.

`start` asks for a shim over a unix socket (0600, in a 0700 directory, and the peer's uid and gid
must be the parent's), sending the shim's already-bound listener with SCM_RIGHTS and its shim
module (pyrunc.shim.api), runtime name, arguments, working directory and environment as
NUL-separated fields; the reply is the child's pid. One parent forks every shim built on the
installed code: it loads each module once, the first time it is asked for it (the ones named by
--shim= before anything else). When no warm parent answers, `start` spawns a shim the slow way
and starts a warm parent for the next ones.

The socket's name carries a hash of the installed code, so a reinstalled pyrunc never forks from a
parent holding the old code; a parent with nothing to do for IDLE_EXIT seconds and no children
left exits.
"""

from __future__ import annotations

import posix
import sys

# `start` imports this module for request_shim(): what only the parent needs is imported there.
from pyrunc.shim.paths import dirname, join

TYPE_CHECKING = False
if TYPE_CHECKING:
    import _socket
    import socket
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any, TypeVar

    from pyrunc.shim.api import Shim

    T = TypeVar("T")

WARM_DIR = "/run/pyrunc"
IDLE_EXIT = 300.0  # seconds without a fork and without a living child
MAX_REQUEST = 1 << 20


def identity() -> str:
    """A short hash naming the installed code and interpreter this process runs."""
    import pyrunc.shim as package
    from pyrunc.shim.address import sha256_hex

    return sha256_hex(code_stamp(package_top(), package.__version__))[:16]


def package_top() -> str:
    """The pyrunc directory this code runs from (holding shim/, oci/ and protos/)."""
    import pyrunc.shim as package

    here = package.__file__ or "./__init__.py"
    if not here.startswith("/"):
        here = join(posix.getcwd(), here)
    return dirname(dirname(here))


def code_stamp(top: str, version: str) -> bytes:
    """What tells the code under `top` (the pyrunc directory) from any other: the interpreter,
    then pip's RECORD of the installation (a hash of every installed file, in one read: this
    runs on `start`'s path), or for a tree without one the mtime of every module.

    The parent forks shims that run all three packages' code, so a change to any of them (not
    only to shim/) must name a new parent."""
    stamp = [sys.executable]
    try:
        record = join(dirname(top), f"pyrunc-{version}.dist-info", "RECORD")
        with open(record, "rb") as f:
            return ("\n".join(stamp) + "\n").encode() + f.read()
    except OSError:
        pass
    for sub in ("shim", "oci", "protos"):
        here = join(top, sub)
        for name in sorted(posix.listdir(here)):
            if name.endswith(".py"):
                stamp.append(f"{sub}/{name}:{posix.stat(join(here, name)).st_mtime_ns}")
    return "\n".join(stamp).encode()


def variant(idle_exit: float, ksm: bool) -> str:
    """The part of a warm parent's name that its settings make ([warm] of the configuration):
    a parent keeps the settings it started with, so other settings need a parent of their own."""
    if idle_exit == IDLE_EXIT and ksm:
        return ""  # the defaults: the name warm parents have always had
    return f"-t{idle_exit:g}" + ("" if ksm else "-noksm")


def socket_path(ident: str | None = None, variant: str = "") -> str:
    return join(WARM_DIR, f"warm-{ident or identity()}{variant}.sock")


# --- the client side: `start` ------------------------------------------------------------


# 2: the runtime name travels in the request. One warm parent serves every name the installed
# code is linked under (its socket is named after the code), so each shim must be told its own.
# 3: so does the shim's module (pyrunc.shim.api): one parent forks every shim built on this code.
# 4: and the settings `start` read from the host's configuration file (pyrunc.shim.config).
REQUEST_VERSION = b"pyrunc-warm-4"
REQUEST_FIELDS = 10  # the version, then the fields before the environment


def encode_request(module: str, runtime: str, namespace: str, id: str, address: str,
                   debug: bool, options: bytes, cwd: str, env: Mapping[str, str],
                   settings: str = "") -> bytes:
    """A request for one shim, as NUL-separated fields (none of them can hold a NUL): cheaper
    to build on start's path than JSON."""
    fields = [REQUEST_VERSION, module.encode(), runtime.encode(), namespace.encode(), id.encode(),
              address.encode(), b"1" if debug else b"", options.hex().encode(), cwd.encode(),
              settings.encode("utf-8", "surrogateescape")]
    fields += [f"{key}={value}".encode() for key, value in env.items()]
    return b"\0".join(fields)


def decode_request(data: bytes) -> tuple[dict[str, Any], str, dict[str, str]]:
    """(args, cwd, env) of a request; ValueError if it is not one."""
    fields = data.split(b"\0")
    if len(fields) < REQUEST_FIELDS or fields[0] != REQUEST_VERSION:
        raise ValueError("not a pyrunc warm parent request")
    module, runtime, namespace, id, address, debug, options, cwd, settings = (
        f.decode("utf-8", "surrogateescape") for f in fields[1:REQUEST_FIELDS])
    if not runtime or not module:
        raise ValueError("a pyrunc warm parent request without a shim module or runtime name")
    env = dict(entry.decode().partition("=")[::2] for entry in fields[REQUEST_FIELDS:])
    args = {"module": module, "runtime": runtime, "namespace": namespace, "id": id,
            "address": address, "debug": debug == "1", "options": bytes.fromhex(options),
            "settings": settings}
    return args, cwd, env


def _environ() -> dict[str, str]:
    """The process's environment as os.environ has it, from posix's bytes (decoded as os does:
    the file system encoding, surrogateescape), without importing os on start's path."""
    encoding = sys.getfilesystemencoding()
    return {key.decode(encoding, "surrogateescape"): value.decode(encoding, "surrogateescape")
            for key, value in posix.environ.items()}


def request_shim(listener: _socket.socket, *, module: str, runtime: str, namespace: str,
                 id: str, address: str, debug: bool, options: bytes, path: str | None = None,
                 timeout: float = 5.0, settings: str = "", variant: str = "") -> int | None:
    """Ask the warm parent for a shim serving `listener`; its pid, or None if no warm parent
    answers (then the caller starts one the slow way). Raises ValueError with the parent's
    reason when it refuses (runtime options that do not decode, a shim cgroup that is not).

    Written against the C `_socket` module: `start` is on every container's path, and the
    `socket` module costs it more to import than everything else here."""
    import _socket

    request = encode_request(module, runtime, namespace, id, address, debug, options,
                             posix.getcwd(), _environ(), settings)
    fd = listener.fileno().to_bytes(4, sys.byteorder, signed=True)  # a C int, for SCM_RIGHTS
    conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    reply = b""
    try:
        conn.settimeout(timeout)
        conn.connect(path or socket_path(variant=variant))
        conn.sendmsg([request], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fd)])
        conn.shutdown(_socket.SHUT_WR)
        while b"\n" not in reply and (chunk := conn.recv(4096)):
            reply += chunk
    except OSError:
        return None
    finally:
        conn.close()
    answer = reply.decode(errors="replace").strip()
    if answer.startswith("error "):
        raise ValueError(answer.removeprefix("error "))
    return int(answer) if answer.isdigit() and int(answer) > 0 else None


def spawn_warm_parent(module: str, *, idle_exit: float = IDLE_EXIT, ksm: bool = True,
                      variant: str = "") -> None:
    """Start a warm parent in the background, detached, with a clean environment; unless one
    already holds the lock (it is still loading): a burst of starts on a fresh node would
    otherwise each start one, all but one of which would load everything only to exit."""
    if _warm_parent_holds_lock(socket_path(variant=variant)):
        return
    from pyrunc.shim.spawn import spawn

    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    # The padding argument is room for the forked shims' process titles, which overwrite the
    # memory of the command line: `ps` then shows each shim like one containerd started.
    argv = [sys.executable, "-I", "-m", "pyrunc.shim.warm", f"--shim={module}"]
    if variant:
        argv += [f"--idle-exit={idle_exit:g}", f"--ksm={int(ksm)}", f"--variant={variant}"]
    argv.append("--title-space=" + "_" * 400)
    try:  # noqa: SIM105 -- contextlib is one more import on start's path
        spawn(argv, env=env, setsid=True)
    except OSError:
        pass  # shims are started the slow way meanwhile


def _warm_parent_holds_lock(path: str | None = None) -> bool:
    import fcntl

    try:
        fd = posix.open((path or socket_path()) + ".lock", posix.O_RDWR | posix.O_CLOEXEC)
    except OSError:
        return False  # never started here
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        posix.close(fd)  # (closing also drops the lock if we just took it)
    return False


# --- the parent ----------------------------------------------------------------------------


def serve(path: str | None = None, idle_exit: float = IDLE_EXIT, modules: Sequence[str] = (),
          ksm: bool = True) -> int:
    """Serve requests for shims until idle for idle_exit seconds with no child left. `modules`
    are the shim modules to load and prepare before the first fork; a request for another one
    loads it then."""
    import contextlib
    import fcntl
    import functools
    import gc
    import json  # noqa: F401 -- preloaded: shims load it lazily (start and delete must not)
    import os
    import signal
    import socket
    import time

    # The lock first: while we load, spawn_warm_parent() sees us and starts no other.
    path = path or socket_path()
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    lock = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return 0  # another warm parent of this code is already serving

    # Everything a shim imports, imported once here.
    import prctl

    import pyrunc.shim.daemon  # noqa: F401
    from pyrunc.shim import log as shimlog
    from pyrunc.shim.api import load_shim
    from pyrunc.shim.ttrpc.server import credentials_allowed, peer_credentials

    # python-prctl takes the memory for titles on its first set_proctitle; one made after the
    # environment was rewritten crashes. We rewrite it for every request, so claim it now.
    prctl.set_proctitle(" ".join(sys.orig_argv))
    shimlog.setup(debug=False, fields={})  # the shims change only their fields
    os.chdir("/")  # hold no bundle: the first container's may be removed while we live
    del prctl
    shims = {module: load_shim(module) for module in modules}
    scratch = os.path.dirname(path)
    # Before SIGCHLD is ignored: a shim's warm-up may reap its own children (the runc shim's
    # rehearsal does).
    for shim in shims.values():
        best_effort(f"preparing {shim.module}", functools.partial(shim.prepare, scratch))

    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        listener.bind(path)
    finally:
        os.umask(old_umask)
    listener.listen(128)
    listener.settimeout(min(idle_exit, 30.0))
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the shims we fork
    signal.signal(signal.SIGTERM, _exit_on_signal)  # and still remove the socket
    children: set[int] = set()
    gc.collect()
    _fillers = best_effort("filling the allocator's free blocks", fill_allocator_holes)  # kept
    gc.freeze()  # keep the collector from writing to (and so copying) the shared pages
    if ksm:
        best_effort("marking memory for samepage merging", offer_pages_to_ksm)
    # Idle from here, not from the bind: the steps above take seconds on a slow machine, and a
    # short idle_timeout would otherwise run out before the parent has served anyone.
    last_fork = time.monotonic()
    try:
        while True:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                children = {pid for pid in children if _alive(pid)}
                if not children and time.monotonic() - last_fork >= idle_exit:
                    return 0
                continue
            with conn:
                creds = peer_credentials(conn)
                if not credentials_allowed(creds, uid=os.geteuid(), gid=os.getegid()):
                    continue
                try:
                    pid = _fork_shim(conn, listener, lock, shims)
                    answer = str(pid)
                except ValueError as e:
                    pid = 0
                    answer = "error " + str(e).replace("\n", " ")
                if pid:
                    children.add(pid)
                    last_fork = time.monotonic()
                with contextlib.suppress(OSError):
                    conn.sendall(answer.encode() + b"\n")
    finally:
        for leftover in (path, path + ".lock"):
            with contextlib.suppress(OSError):
                os.unlink(leftover)
        listener.close()


def best_effort(what: str, step: Callable[[], T]) -> T | None:
    """Run one of the steps that only make shims cheaper; a failure is logged, not fatal: shims
    forked without it work the same."""
    from pyrunc.shim import log

    try:
        return step()
    except Exception:
        log.exception("warm parent: %s failed", what)
        return None


def allocator_holes() -> dict[int, int]:
    """Free blocks in pymalloc's partly used pools: {block size: count}, from the interpreter's
    own report (sys._debugmallocstats, which writes to the C stderr)."""
    import os
    with open(os.memfd_create("mallocstats"), "rb") as report:
        saved = os.dup(2)
        try:
            os.dup2(report.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        report.seek(0)
        text = report.read().decode(errors="replace")
    holes = {}
    table = text.partition("-----------\n")[2].partition("\n\n")[0]
    for line in table.splitlines():
        fields = line.split()
        if len(fields) == 5 and all(f.isdigit() for f in fields):
            holes[int(fields[1])] = int(fields[4])
    return holes


def fill_allocator_holes() -> list[object]:
    """Fill every free block of pymalloc's partly used pools with an object kept for good.

    Importing leaves free blocks scattered over most pools. A forked shim would put its own new
    objects there, and each of them would make the kernel copy a whole 4 KiB page the child shares
    with us. With the holes filled, a child's objects go to pools of its own, packed together."""
    fillers: list[object] = []
    for size, count in allocator_holes().items():
        if size <= 16:
            fillers += [object() for _ in range(count)]
        elif size <= 32:
            fillers += [float(i) + 0.5 for i in range(count + 100)]  # after the float free list
        else:
            fillers += [bytes(size - 33) for _ in range(count)]  # a bytes object is 33 + len
    return fillers


MADV_MERGEABLE = 12


def offer_pages_to_ksm() -> int:
    """Mark our private writable memory mergeable by the kernel's samepage merging; the number
    of regions marked.

    What a shim changes in a page it shares with us is mostly reference counts, and many come
    back to what they were, or to what every other shim made them: with ksmd running
    (/sys/kernel/mm/ksm/run), such copies are found and shared again. The regions are marked
    with madvise, not prctl(PR_SET_MEMORY_MERGE): the mark must go to the shims we fork, never
    through exec to runc and the containers."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    marked = 0
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if fields[1][1] != "w" or fields[1][3] != "p" or fields[-1] in ("[vvar]", "[vdso]"):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if libc.madvise(start, end - start, MADV_MERGEABLE) == 0:
                marked += 1
    return marked


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _alive(pid: int) -> bool:
    import os
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fork_shim(conn: socket.socket, listener: socket.socket, lock: int, shims: dict[str, Shim]
               ) -> int:
    """Read one request and fork its shim; the child never returns from here."""
    import os
    import signal
    import socket

    conn.settimeout(5.0)
    try:
        data, fds, _, _ = socket.recv_fds(conn, MAX_REQUEST, 4)
        while chunk := conn.recv(MAX_REQUEST):  # the rest, if one read did not take it all
            data += chunk
        args, cwd, env = decode_request(data)
    except (OSError, ValueError, UnicodeDecodeError):
        return 0
    if len(fds) != 1:
        for fd in fds:
            os.close(fd)
        return 0
    shim_listener = fds[0]
    shim = shims.get(args["module"])
    if shim is None:  # a shim module not loaded yet: load it here, for this and later forks
        from pyrunc.shim.api import load_shim

        try:
            shim = shims[args["module"]] = load_shim(args["module"])
        except ValueError:  # start then says why
            os.close(shim_listener)
            raise
    options = args["options"]
    # The shim's environment is set here, not in the child: each shim would otherwise copy the
    # pages it touches doing so, while requests from one containerd all carry the same one.
    if os.environ != env:
        os.environ.clear()
        os.environ.update(env)
    try:
        pid = os.fork()
    except OSError:
        os.close(shim_listener)
        return 0  # start falls back to the slow way
    if pid:
        os.close(shim_listener)
        try:
            shim.start_options(pid, options)
        except (OSError, ValueError) as e:
            os.kill(pid, signal.SIGKILL)
            from pyrunc.shim.errors import describe

            raise ValueError(describe(e)) from e
        return pid
    # The child: become the shim, and never come back into the parent's loop.
    code = 1
    try:
        conn.close()
        listener.close()
        os.close(lock)
        os.setsid()
        for sig in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        import prctl

        from pyrunc.shim import daemon
        from pyrunc.shim.names import shim_title

        prctl.set_proctitle(shim_title(args["runtime"], args["namespace"], args["id"],
                                       args["address"], bool(args.get("debug"))))
        os.chdir(cwd)
        code = daemon.run(shim, namespace=args["namespace"], id=args["id"], address=args["address"],
                          debug=bool(args.get("debug")), listener_fd=shim_listener,
                          runtime=args["runtime"], settings=args["settings"])
    except BaseException:
        import traceback

        traceback.print_exc()  # to the shim's log, if it got that far
    finally:
        os._exit(code)


def main() -> None:
    import errno

    try:
        flags = {name: value for name, _, value in
                 (arg.removeprefix("--").partition("=") for arg in sys.argv[1:])
                 if name in ("idle-exit", "ksm", "variant")}
        modules = [arg.partition("=")[2] for arg in sys.argv[1:] if arg.startswith("--shim=")]
        sys.exit(serve(socket_path(variant=flags.get("variant", "")), modules=modules,
                       idle_exit=float(flags.get("idle-exit", IDLE_EXIT)),
                       ksm=flags.get("ksm", "1") == "1"))
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM):
            sys.exit(0)  # not allowed here: shims are then started the slow way
        raise


if __name__ == "__main__":
    main()
