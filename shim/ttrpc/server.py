"""ttrpc server: the thread layer that moves bytes between sockets and handlers.

The wire rules live in protocol.py; this module accepts connections, checks the peer's credentials,
looks up services and methods, and runs each call in a thread of its own, the way Go's ttrpc runs
each in a goroutine. Like containerd/ttrpc:

- a connection's calls run concurrently and are answered in completion order, each reply written
  as one whole frame under the connection's write lock (containerd keeps Wait blocked while it
  sends Kill on the same connection);
- when a connection ends, `CallContext.cancelled` is set for its calls in flight (Go cancels their
  context) and their replies are dropped; other connections are not affected. A thread cannot be
  killed: a handler that ignores `cancelled` runs to its end, and its answer goes nowhere;
- `timeout_nano` becomes CallContext.deadline (time.monotonic() units) but is not enforced here:
  like a Go context, it is for the handler to honour.

Threads: `serve()` accepts in the calling thread (`start()` gives it one, "ttrpc-accept"); each
connection has one reader thread ("ttrpc-conn"), which answers protocol errors and unknown methods
itself and starts one thread per call ("ttrpc-call <method>"). All are daemon threads. Once close()
or shutdown() has been followed by a successful wait_closed(), none of them is left, except handler
threads still running a handler's own code.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import threading
import time

from google.protobuf.message import DecodeError, Message  # type: ignore[import-untyped, unused-ignore]

from .. import log
from .protocol import ProtocolReply, ServerProtocol
from .status import Code, TTRPCError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

    from .protocol import CallRequested

    # The request is typed Any so handlers may annotate it with their own generated class.
    Handler = Callable[[Any, "CallContext"], Message]


NAMESPACE_KEY = "containerd-namespace-ttrpc"

_READ_SIZE = 256 * 1024
# Most reads are one small frame; a 256 KiB buffer costs a fresh mmap()/munmap() from
# malloc each time (7 us against 0.5). Large reads only while a read fills its buffer.
_READ_SMALL = 64 * 1024
_UCRED = struct.Struct("3i")  # struct ucred: pid_t, uid_t, gid_t
# accept() failures that say nothing about the listener itself: retry after a pause, as Go does.
_ACCEPT_RETRY = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.ECONNABORTED, errno.EPROTO}
)
_ACCEPT_BACKOFF_MAX = 1.0


class PeerCredentials:
    __slots__ = ("gid", "pid", "uid")

    def __init__(self, pid: int, uid: int, gid: int) -> None:
        self.pid = pid
        self.uid = uid
        self.gid = gid

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PeerCredentials):
            return NotImplemented
        return (self.pid, self.uid, self.gid) == (other.pid, other.uid, other.gid)

    def __hash__(self) -> int:
        return hash((self.pid, self.uid, self.gid))

    def __repr__(self) -> str:
        return f"PeerCredentials(pid={self.pid}, uid={self.uid}, gid={self.gid})"


def peer_credentials(sock: socket.socket) -> PeerCredentials:
    """The credentials the kernel recorded for the peer of a connected unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return PeerCredentials(pid, uid, gid)


def credentials_allowed(creds: PeerCredentials, *, uid: int, gid: int) -> bool:
    """containerd's rule (ttrpc unixcreds_linux.go): the peer's uid and gid must both match ours.

    Anyone able to connect could otherwise drive runc as the shim's user.
    """
    return creds.uid == uid and creds.gid == gid


class CallContext:
    """What a handler knows about its call besides the request message."""

    __slots__ = ("cancelled", "deadline", "metadata", "method", "service")

    def __init__(
        self,
        service: str,
        method: str,
        metadata: Mapping[str, list[str]],
        deadline: float | None,  # in time.monotonic() units; None when the caller set no timeout
        cancelled: threading.Event | None = None,
    ) -> None:
        self.service = service
        self.method = method
        self.metadata = metadata
        self.deadline = deadline
        # Set when the call's connection has ended: nobody is waiting for the answer any more.
        # One event per connection, shared by its calls.
        self.cancelled = threading.Event() if cancelled is None else cancelled

    @property
    def namespace(self) -> str | None:
        """The containerd namespace; containerd sends it on every call to a shim."""
        values = self.metadata.get(NAMESPACE_KEY)
        return values[0] if values else None

    def __repr__(self) -> str:
        return f"CallContext({self.service}/{self.method}, deadline={self.deadline})"


class Method:
    """A unary method: the payload is decoded as `request_type`, then `handler` answers it.

    The handler is a plain function, `handler(request, ctx) -> Message`, called in a thread of
    its own; it may block as long as it likes without holding up other calls.
    """

    __slots__ = ("handler", "request_type")

    def __init__(self, request_type: type[Message], handler: Handler) -> None:
        self.request_type = request_type
        self.handler = handler

    def __repr__(self) -> str:
        return f"Method({self.request_type.__name__}, {self.handler!r})"


class Server:
    """Serves registered services on unix sockets; see the module docstring for the rules."""

    def __init__(
        self,
        *,
        check_peer_credentials: bool = True,
        on_connection_closed: Callable[[int], None] | None = None,
    ) -> None:
        """`on_connection_closed` is called with the number of connections still open, in the
        thread of the connection that ended."""
        self._check_peer_credentials = check_peer_credentials
        self._on_connection_closed = on_connection_closed
        self._services: dict[str, Mapping[str, Method]] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a listener or connection went away
        self._listeners: set[socket.socket] = set()  # one per serve() loop running
        self._connections: set[_Connection] = set()
        # Accept and reader threads, joined by wait_closed() once their work is done.
        self._threads: set[threading.Thread] = set()
        self._closing = False
        self._stop = threading.Event()  # cuts an accept backoff short

    def register(self, service_name: str, methods: Mapping[str, Method]) -> None:
        """Serve `methods` under `service_name`; one mapping may be registered under many names."""
        if service_name in self._services:
            raise ValueError(f"duplicate service {service_name} registered")
        self._services[service_name] = methods

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def serve(self, listener: socket.socket) -> None:
        """Accept connections on a bound, listening unix socket until close() or shutdown().

        Blocks the calling thread. The listener is closed when serving stops, so late clients
        are refused, not left waiting.
        """
        if self._add_listener(listener):
            self._accept_loop(listener)

    def start(self, listener: socket.socket) -> threading.Thread:
        """serve() in a daemon thread of its own, which is returned already started."""
        # Registered here, not in the thread, so that a wait_closed() right after start()
        # already counts this listener.
        thread = threading.Thread(target=self._serve_logged, args=(listener,),
                                  name="ttrpc-accept", daemon=True)
        if self._add_listener(listener):
            with self._lock:
                self._threads.add(thread)
            thread.start()
        return thread

    def _serve_logged(self, listener: socket.socket) -> None:
        try:
            self._accept_loop(listener)
        except Exception:
            log.exception("ttrpc: accept loop failed; no longer serving")

    def _add_listener(self, listener: socket.socket) -> bool:
        # Blocking accept(): close() wakes it with shutdown(), which Linux turns into EINVAL.
        listener.setblocking(True)
        with self._lock:
            if not self._closing:
                self._listeners.add(listener)
                return True
        listener.close()
        return False

    def _accept_loop(self, listener: socket.socket) -> None:
        backoff = 0.0
        try:
            while not self._closing:
                try:
                    conn, _ = listener.accept()
                except OSError as exc:
                    if self._closing:
                        break  # woken by close() or shutdown()
                    if exc.errno not in _ACCEPT_RETRY:
                        raise
                    backoff = min(_ACCEPT_BACKOFF_MAX, backoff * 2 or 0.001)
                    log.error("ttrpc: failed accept; backoff %.3fs: %s", backoff, exc)
                    self._stop.wait(backoff)
                    continue
                backoff = 0.0
                self._accept(conn)
        finally:
            with self._lock:
                # Closed under the lock: close() must never shut down a reused descriptor.
                self._listeners.discard(listener)
                listener.close()
                self._changed.notify_all()

    def _accept(self, conn: socket.socket) -> None:
        conn.setblocking(True)
        if self._check_peer_credentials:
            try:
                creds = peer_credentials(conn)
            except OSError as exc:
                log.warning("ttrpc: refusing connection, cannot read peer credentials: %s", exc)
                conn.close()
                return
            if not credentials_allowed(creds, uid=os.geteuid(), gid=os.getegid()):
                # Closed before a byte is read, silently as far as the peer is concerned.
                log.warning(
                    "ttrpc: refusing connection from pid %d uid %d gid %d: credentials differ",
                    creds.pid,
                    creds.uid,
                    creds.gid,
                )
                conn.close()
                return
        connection = _Connection(self, conn)
        with self._lock:
            if self._closing:
                conn.close()
                return
            self._connections.add(connection)
            self._threads = {t for t in self._threads if t.is_alive()}
            self._threads.add(connection.thread)
        try:
            connection.thread.start()
        except RuntimeError:  # no thread to be had: the connection cannot be served
            log.exception("ttrpc: cannot start a connection's thread")
            with self._lock:
                self._threads.discard(connection.thread)
            connection.end()

    def _connection_closed(self, connection: _Connection) -> None:
        with self._lock:
            self._connections.discard(connection)
            remaining = len(self._connections)
            self._changed.notify_all()
        if self._on_connection_closed is not None:
            try:
                self._on_connection_closed(remaining)
            except Exception:
                log.exception("ttrpc: on_connection_closed callback failed")

    def close(self) -> None:
        """Stop accepting and drop every connection now; their calls in flight are cancelled."""
        for connection in self._begin_closing():
            connection.abort()

    def shutdown(self, timeout: float | None = None) -> bool:
        """Stop accepting, let calls in flight be answered, close connections as they go idle.

        Waits until nothing is left, or at most `timeout` seconds: False means some handler was
        still running, and the caller should fall back to close().
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        for connection in self._begin_closing():
            connection.close_when_idle()
        return self.wait_closed(None if deadline is None else deadline - time.monotonic())

    def _begin_closing(self) -> list[_Connection]:
        with self._lock:
            self._closing = True
            self._stop.set()
            for listener in self._listeners:
                try:
                    listener.shutdown(socket.SHUT_RDWR)  # wakes its accept()
                except OSError as exc:
                    log.debug("ttrpc: shutting the listener down: %s", exc)
            return list(self._connections)

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Wait until no serve() loop runs and every connection is closed, and join their
        threads; False if that took more than `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while self._listeners or self._connections:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._changed.wait(remaining)
            threads, self._threads = self._threads, set()
        # Each thread has done its last piece of work (closing its listener or connection):
        # joining only waits for it to return.
        me = threading.current_thread()
        for thread in threads:
            if thread is not me:
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        left = {t for t in threads if t.is_alive() and t is not me}
        if left:
            with self._lock:
                self._threads |= left
            return False
        return True

    def _lookup(self, call: CallRequested) -> Method | TTRPCError:
        methods = self._services.get(call.service)
        if methods is None:
            return TTRPCError(Code.UNIMPLEMENTED, f"service {call.service}")
        method = methods.get(call.method)
        if method is None:
            return TTRPCError(Code.UNIMPLEMENTED, f"method {call.method}")
        return method


def _invoke(
    protocol: ServerProtocol, call: CallRequested, method: Method, cancelled: threading.Event
) -> bytes:
    """Run one handler and encode its answer; every failure becomes a status, never an exception."""
    try:
        request = method.request_type.FromString(call.payload)
    except DecodeError as exc:
        return protocol.respond_error(
            call.stream_id, Code.INTERNAL, f"ttrpc: error unmarshalling payload: {exc}"
        )
    context = CallContext(
        call.service,
        call.method,
        call.metadata,
        time.monotonic() + call.timeout_nano / 1e9 if call.timeout_nano else None,
        cancelled,
    )
    try:
        response = method.handler(request, context)
    except TTRPCError as exc:
        log.debug("ttrpc: %s/%s: %s", call.service, call.method, exc)
        return protocol.respond_error(call.stream_id, exc.code, exc.message)
    except Exception as exc:
        # A plain exception is a bug or an unexpected failure: Go sends its text with Unknown.
        log.exception("ttrpc: %s/%s failed", call.service, call.method)
        return protocol.respond_error(call.stream_id, Code.UNKNOWN, str(exc) or type(exc).__name__)
    if response is None:
        return protocol.respond_error(
            call.stream_id, Code.UNKNOWN, "ttrpc: marshal called with nil"
        )
    if not isinstance(response, Message):
        return protocol.respond_error(
            call.stream_id,
            Code.INTERNAL,
            f"ttrpc: error unsupported response type: {type(response).__name__}",
        )
    try:
        payload = response.SerializeToString()
    except Exception as exc:
        log.exception("ttrpc: %s/%s: cannot encode the response", call.service, call.method)
        return protocol.respond_error(
            call.stream_id, Code.INTERNAL, f"ttrpc: error marshaling payload: {exc}"
        )
    return protocol.respond(call.stream_id, payload)


class _Connection:
    """One accepted connection: a reader thread plus one thread per call in flight.

    Two locks. `_state` guards the counters and flags, and every shutdown() of the socket;
    `_write` makes each frame one uninterrupted sendall(). The socket is closed only by the
    reader thread, holding `_write` after `_ended` is set, so no other thread can ever write to
    or shut down a descriptor number the process has since reused. Order: `_write`, then
    `_state`, never the other way.
    """

    __slots__ = (
        "_close_when_idle",
        "_done",
        "_ended",
        "_pending",
        "_protocol",
        "_server",
        "_sock",
        "_state",
        "_write",
        "cancelled",
        "thread",
    )

    def __init__(self, server: Server, sock: socket.socket) -> None:
        self._server = server
        self._sock = sock
        self._protocol = ServerProtocol()
        self._state = threading.Lock()
        self._write = threading.Lock()
        self._pending = 0  # calls dispatched and not yet answered (or dropped)
        # Call threads past their handler (only writing the reply, then returning): the reader
        # joins them when the connection ends. Those still in a handler are not waited for.
        self._done: list[threading.Thread] = []
        self._close_when_idle = False
        self._ended = False  # the socket is shut down: nothing more is read, written or called
        self.cancelled = threading.Event()
        self.thread = threading.Thread(target=self._run, name="ttrpc-conn", daemon=True)

    def _run(self) -> None:
        try:
            size = _READ_SMALL
            while data := self._sock.recv(size):
                size = _READ_SIZE if len(data) == size else _READ_SMALL
                for event in self._protocol.receive_data(data):
                    if isinstance(event, ProtocolReply):
                        self._send(event.data)
                    else:
                        self._dispatch(event)
        except OSError as exc:  # includes ConnectionResetError: the peer went away
            log.debug("ttrpc: connection ended: %s", exc)
        except Exception:
            # Malformed input never gets here (protocol.py answers it); this is a bug in pyrunc.
            # It must end this connection only, never the server.
            log.exception("ttrpc: connection failed")
        finally:
            self.end()

    def end(self) -> None:
        """The reader's last act: close the socket, join finished calls, tell the server."""
        with self._state:
            self._end_locked()
            done, self._done = self._done, []
        with self._write:
            self._sock.close()
        for thread in done:
            thread.join()  # they only drop their reply now: never long
        self._server._connection_closed(self)

    def _end_locked(self) -> None:
        if not self._ended:
            self._ended = True
            self.cancelled.set()
            try:
                # Wakes the reader's recv() and a sendall() stuck on a peer that does not read.
                # Replies already sent stay readable by the peer, then it sees EOF.
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError as exc:
                log.debug("ttrpc: shutting a connection down: %s", exc)

    def _dispatch(self, call: CallRequested) -> None:
        method = self._server._lookup(call)
        if isinstance(method, TTRPCError):
            self._send(self._protocol.respond_error(call.stream_id, method.code, method.message))
            return
        thread = threading.Thread(target=self._answer, args=(call, method),
                                  name=f"ttrpc-call {call.method}", daemon=True)
        with self._state:
            if self._ended:
                log.debug("ttrpc: connection closing, dropping a call to %s", call.method)
                return
            self._pending += 1
            # Forget calls that have returned since, so a long-lived connection keeps no list.
            if self._done:
                self._done = [t for t in self._done if t.is_alive()]
        try:
            thread.start()
        except RuntimeError as exc:  # out of threads: answer at once rather than never
            log.error("ttrpc: %s/%s: cannot start a thread: %s", call.service, call.method, exc)
            self._send(self._protocol.respond_error(
                call.stream_id, Code.RESOURCE_EXHAUSTED, f"ttrpc: cannot start a thread: {exc}"
            ))
            self._answered()

    def _answer(self, call: CallRequested, method: Method) -> None:
        frame = None
        try:
            frame = _invoke(self._protocol, call, method, self.cancelled)
        finally:
            with self._state:
                self._done.append(threading.current_thread())
            try:
                if frame is not None:
                    self._send(frame)
            finally:
                self._answered()

    def _answered(self) -> None:
        with self._state:
            self._pending -= 1
            if self._close_when_idle and not self._pending:
                self._end_locked()

    def _send(self, frame: bytes) -> None:
        with self._write:
            if self._ended:
                log.debug("ttrpc: connection closed, dropping a reply")
                return
            try:
                self._sock.sendall(frame)
            except OSError as exc:
                # The peer is gone, or part of a frame went out: either way the stream is over.
                log.debug("ttrpc: cannot write a reply: %s", exc)
                with self._state:
                    self._end_locked()

    def close_when_idle(self) -> None:
        with self._state:
            self._close_when_idle = True
            if not self._pending:
                self._end_locked()

    def abort(self) -> None:
        with self._state:
            self._end_locked()
