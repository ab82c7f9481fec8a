"""The long-running shim: threads serving a Shim's services (the Task service) for its containers.

It is started by `start` with the listening socket as fd 3 and the bundle as its working
directory. It becomes the subreaper of everything its containers leave behind, logs into the
bundle's `log` fifo, publishes events to containerd, and exits when Shutdown finds it serving no
container any more (or on SIGTERM), removing its socket.

Threads, as the Go shim has goroutines: the main thread takes every signal (SIGCHLD, SIGTERM,
SIGINT are blocked in all threads and taken here with sigwait) and is the one reaper; the ttrpc
server has an accept thread, a reader thread per connection and a thread per call; each process
has a thread waiting for its exit, each stream a relay thread; the publisher has its own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading

from pyrunc.shim import log
from pyrunc.shim.api import ShimContext
from pyrunc.shim.publisher import Publisher
from pyrunc.shim.reaper import Reaper
from pyrunc.shim.ttrpc.server import Server

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pyrunc.shim.api import Shim
    from pyrunc.shim.config import Settings


LISTENER_FD = 3
DEFAULT_TTRPC_ADDRESS = "/run/containerd/containerd.sock.ttrpc"


def run(shim: Shim, *, namespace: str, id: str, address: str, debug: bool,
        socket_path: str = "", listener_fd: int = LISTENER_FD, runtime: str = "",
        settings: str = "") -> int:
    # `runtime` is the name containerd ran `start` as (see cli.runtime_name_of): an operator
    # who linked pyrunc in as another runtime finds its lines in containerd's log under that.
    # `settings` are the host configuration's, as `start` read it (encoded; "" for none: a shim
    # started by hand reads the file itself).
    from pyrunc.shim import config

    runtime = runtime or shim.runtime
    fields = {"runtime": runtime, "namespace": namespace}
    try:
        current = config.decode(settings, shim) if settings else config.settings_for(shim)
    except ValueError as e:
        log.setup(debug=debug, fields=fields, fifo="log")
        log.error("%s", e)
        return 1
    log.setup(debug=debug, fields=fields, fifo="log", level=current["log_level"])
    if socket_path:
        from pyrunc.shim.address import bind_socket

        listener = socket.socket(fileno=bind_socket(socket_path).detach())
    else:
        listener = socket.socket(fileno=listener_fd)
    # Inherited without close-on-exec (from `start`, or SCM_RIGHTS from the warm parent): a
    # long-lived child (the wasm shim's runner) would otherwise keep the socket answering after
    # the shim is gone, and the `delete` action would take it for a live shim's.
    listener.set_inheritable(False)
    ttrpc_address = os.environ.get("TTRPC_ADDRESS") or (
        f"{address}.ttrpc" if address else DEFAULT_TTRPC_ADDRESS
    )
    # Before any thread exists, so that every thread inherits the mask: these signals are
    # only ever taken by sigwait in this thread. (Children get an empty mask: shim/spawn.py.)
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        _serve(shim, listener, namespace, ttrpc_address, runtime, current)
    except Exception:
        log.exception("shim failed")
        return 1
    return 0


_SIGNALS = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGUSR1}
_SHUTDOWN_TIMEOUT = 2.0  # a pending Wait must not hold the shim up
_PUBLISH_TIMEOUT = 5.0


def _serve(shim: Shim, listener: socket.socket, namespace: str, ttrpc_address: str,
           runtime: str, settings: Settings) -> None:
    reaper = Reaper()
    reaper.install()
    main = threading.get_ident()

    def stop() -> None:  # from any thread: Shutdown of an empty shim
        signal.pthread_kill(main, signal.SIGTERM)

    publisher = Publisher(ttrpc_address, namespace)
    publisher.start()
    ctx = ShimContext(namespace=namespace, runtime=runtime, publisher=publisher, monitor=reaper,
                      shutdown=stop, settings=settings)
    server = Server()
    for name, methods in shim.services(ctx).items():
        server.register(name, methods)
    socket_file = listener.getsockname()
    server.start(listener)
    log.info("serving on %s (pid %d)", socket_file, os.getpid())
    done = threading.Event()

    def shut_down() -> None:
        # In a thread of its own: calls still being answered may need the reaper meanwhile.
        log.info("shutting down")
        try:
            with contextlib.suppress(OSError):
                if isinstance(socket_file, str) and socket_file:
                    os.unlink(socket_file)
            if not server.shutdown(timeout=_SHUTDOWN_TIMEOUT):
                server.close()
            publisher.close(timeout=_PUBLISH_TIMEOUT)
        except Exception:
            log.exception("shutting down failed")  # the shim must still exit
        finally:
            done.set()
            signal.pthread_kill(main, signal.SIGUSR1)

    reaper.reap()  # anything that exited before the signal was blocked
    shutting_down = False
    while not done.is_set():
        sig = signal.sigwait(_SIGNALS)
        if sig == signal.SIGCHLD:
            reaper.reap()
        elif sig != signal.SIGUSR1 and not shutting_down:  # SIGUSR1 only wakes us when done
            shutting_down = True
            threading.Thread(target=shut_down, name="shutdown", daemon=True).start()
