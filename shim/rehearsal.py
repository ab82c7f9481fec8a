"""A rehearsal of a shim's hot paths, run by the warm parent before it forks any shim.

CPython 3.11 writes into a function's code object the first times the function runs (a warm-up
counter, then the specialised bytecode). In a forked shim each such write copies a 4 KiB page the
shim would otherwise share with the warm parent. Running the paths every shim runs (the
ttrpc server and client with every Task request type, a child through the reaper, a
failing runc call, a log line) a few times in the parent leaves that code already specialised,
so the shims mostly read it. (What a shim still writes, it writes mostly to reference counts.)

The rehearsal needs no container and leaves nothing behind: one socket and one runc root in a
private directory, both removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading

from pyrunc.oci.runc import Runc, RuncError
from pyrunc.protos import empty_pb2, events_pb2, forward_pb2, shim_pb2
from pyrunc.shim import log
from pyrunc.shim.publisher import EVENTS_SERVICE, Publisher
from pyrunc.shim.reaper import Reaper
from pyrunc.shim.task import TASK_SERVICES
from pyrunc.shim.ttrpc.client import Client
from pyrunc.shim.ttrpc.server import NAMESPACE_KEY, CallContext, Method, Server

ROUNDS = 10  # the warm-up counter runs out after 8 calls


def rehearse(directory: str, rounds: int = ROUNDS) -> None:
    """Run the rehearsal `rounds` times in `directory` (private to the caller, kept).

    Every thread it starts has ended when it returns: the caller forks next."""
    work = os.path.join(directory, f"rehearsal-{os.getpid()}")
    os.mkdir(work, 0o700)
    try:
        for _ in range(rounds):
            _round(work)
            _log_line()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _echo(request: object, context: CallContext) -> object:
    return request


def _round(work: str) -> None:
    reaper = Reaper()
    reaper.install(subreaper=False)
    stop = threading.Event()

    def reaping() -> None:  # a shim reaps on SIGCHLD; the parent must not block that signal
        while not stop.wait(0.002):
            reaper.reap()

    thread = threading.Thread(target=reaping, name="rehearsal-reaper")
    thread.start()
    try:
        _, exited = reaper.spawn(["true"])
        exited.result()
        runc = Runc(monitor=reaper, root=os.path.join(work, "runc"),
                    log=os.path.join(work, "log.json"))
        with contextlib.suppress(RuncError, OSError):
            runc.state("rehearsal")
        _ttrpc(work)
    finally:
        stop.set()
        thread.join()
        reaper.reap()


def _forwarded(request: object, context: CallContext) -> empty_pb2.Empty:
    return empty_pb2.Empty()


def _ttrpc(work: str) -> None:
    """Every Task request through our server and client, and events through the publisher."""
    service = shim_pb2.DESCRIPTOR.services_by_name["Task"]
    types = {m.name: getattr(shim_pb2, m.input_type.name) for m in service.methods}
    server = Server()
    server.register(TASK_SERVICES[0], {name: Method(t, _echo) for name, t in types.items()})
    server.register(EVENTS_SERVICE, {"Forward": Method(forward_pb2.ForwardRequest, _forwarded)})
    path = os.path.join(work, "ttrpc.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    accepting = server.start(listener)
    try:
        client = Client.connect(path)
        try:
            for name, request_type in types.items():
                client.call(TASK_SERVICES[0], name, request_type(id="rehearsal"),
                            request_type, timeout=5.0, metadata={NAMESPACE_KEY: "rehearsal"})
        finally:
            client.close()
        publisher = Publisher(path, "rehearsal")
        publisher.start()
        publisher.publish(events_pb2.TaskCreate(container_id="rehearsal", pid=1))
        publisher.publish(events_pb2.TaskExit(container_id="rehearsal", pid=1, exit_status=1))
        publisher.close(timeout=5.0)
        if not server.shutdown(timeout=5.0):
            server.close()
    finally:
        server.close()
        accepting.join()
        os.unlink(path)
    # The calls' own threads end right after their replies; the warm parent forks next.
    for other in threading.enumerate():
        if other is not threading.current_thread() and other.name != "rehearsal-reaper":
            other.join(5.0)


def _log_line() -> None:
    log.line(log.INFO, "rehearsal line")
