"""The long-running shim: one asyncio loop serving the Task service for its containers.

It is started by `start` with the listening socket as fd 3 and the bundle as its working
directory. It becomes the subreaper of everything its containers leave behind, logs into the
bundle's `log` fifo, publishes events to containerd, and exits when Shutdown finds it serving no
container any more (or on SIGTERM), removing its socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket

from pyrunc.shim import log as shimlog
from pyrunc.shim.cli import RUNTIME_NAME
from pyrunc.shim.publisher import Publisher
from pyrunc.shim.reaper import Reaper
from pyrunc.shim.task import TASK_SERVICES, TaskService
from pyrunc.shim.ttrpc.server import Server

log = logging.getLogger("pyrunc.shim")

LISTENER_FD = 3
DEFAULT_TTRPC_ADDRESS = "/run/containerd/containerd.sock.ttrpc"


def run(*, namespace: str, id: str, address: str, debug: bool, socket_path: str = "",
        listener_fd: int = LISTENER_FD, runtime: str = RUNTIME_NAME) -> int:
    # `runtime` is the name containerd ran `start` as (see cli.runtime_name_of): an operator
    # who linked pyrunc in as another runtime finds its lines in containerd's log under that.
    fields = {"runtime": runtime, "namespace": namespace}
    shimlog.setup(debug=debug, fields=fields, fifo="log")
    if socket_path:
        from pyrunc.shim.manager import bind_socket

        listener = socket.socket(fileno=bind_socket(socket_path).detach())
    else:
        listener = socket.socket(fileno=listener_fd)
    ttrpc_address = os.environ.get("TTRPC_ADDRESS") or (
        f"{address}.ttrpc" if address else DEFAULT_TTRPC_ADDRESS
    )
    try:
        asyncio.run(_serve(listener, namespace, ttrpc_address))
    except Exception:
        log.exception("shim failed")
        return 1
    return 0


async def _serve(listener: socket.socket, namespace: str, ttrpc_address: str) -> None:
    loop = asyncio.get_running_loop()
    reaper = Reaper(loop)
    reaper.install()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    publisher = Publisher(ttrpc_address, namespace)
    publisher.start()
    service = TaskService(namespace, publisher, reaper, stop.set)
    server = Server()
    methods = service.methods()  # one table, served under every name
    for name in TASK_SERVICES:
        server.register(name, methods)
    socket_file = listener.getsockname()
    serving = loop.create_task(server.serve(listener))
    log.info("serving on %s (pid %d)", socket_file, os.getpid())
    await stop.wait()
    log.info("shutting down")
    with contextlib.suppress(OSError):
        if isinstance(socket_file, str) and socket_file:
            os.unlink(socket_file)
    try:
        async with asyncio.timeout(2.0):  # a pending Wait must not hold the shim up
            await server.shutdown()
    except TimeoutError:
        server.close()
    serving.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await serving
    await publisher.close(timeout=5.0)
    reaper.uninstall()
