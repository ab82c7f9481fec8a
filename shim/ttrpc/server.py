"""ttrpc server: the asyncio layer that moves bytes between sockets and handlers.

The wire rules live in protocol.py; this module accepts connections, checks the peer's credentials,
looks up services and methods, and runs each call as its own task. Like containerd/ttrpc:

- a connection's calls run concurrently and are answered in completion order, each reply written
  as one whole frame (containerd keeps Wait blocked while it sends Kill on the same connection);
- when a connection ends, its calls in flight are cancelled (Go cancels their context) and their
  replies are dropped; other connections are not affected;
- `timeout_nano` becomes CallContext.deadline but is not enforced here: like a Go context, it is
  for the handler to honour (e.g. with `asyncio.timeout_at(ctx.deadline)`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError, Message  # type: ignore[import-untyped, unused-ignore]

from .protocol import CallRequested, ProtocolReply, ServerProtocol
from .status import Code, TTRPCError

log = logging.getLogger("pyrunc.ttrpc")

NAMESPACE_KEY = "containerd-namespace-ttrpc"

_READ_SIZE = 256 * 1024
_UCRED = struct.Struct("3i")  # struct ucred: pid_t, uid_t, gid_t
# accept() failures that say nothing about the listener itself: retry after a pause, as Go does.
_ACCEPT_RETRY = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.ECONNABORTED, errno.EPROTO}
)
_ACCEPT_BACKOFF_MAX = 1.0


@dataclass(frozen=True, slots=True)
class PeerCredentials:
    pid: int
    uid: int
    gid: int


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


@dataclass(frozen=True, slots=True)
class CallContext:
    """What a handler knows about its call besides the request message."""

    service: str
    method: str
    metadata: Mapping[str, list[str]]
    deadline: float | None  # in loop.time() units; None when the caller set no timeout

    @property
    def namespace(self) -> str | None:
        """The containerd namespace; containerd sends it on every call to a shim."""
        values = self.metadata.get(NAMESPACE_KEY)
        return values[0] if values else None


@dataclass(frozen=True, slots=True)
class Method:
    """A unary method: the payload is decoded as `request_type`, then `handler` answers it."""

    request_type: type[Message]
    # The request is typed Any so handlers may annotate it with their own generated class.
    handler: Callable[[Any, CallContext], Awaitable[Message]]


class Server:
    """Serves registered services on unix sockets; see the module docstring for the rules."""

    def __init__(
        self,
        *,
        check_peer_credentials: bool = True,
        on_connection_closed: Callable[[int], None] | None = None,
    ) -> None:
        """`on_connection_closed` is called with the number of connections still open."""
        self._check_peer_credentials = check_peer_credentials
        self._on_connection_closed = on_connection_closed
        self._services: dict[str, Mapping[str, Method]] = {}
        self._connections: set[_Connection] = set()
        self._serving = 0  # serve() loops running
        self._closing = False
        self._stop = asyncio.Event()
        self._changed = asyncio.Event()  # set whenever _serving or _connections shrink

    def register(self, service_name: str, methods: Mapping[str, Method]) -> None:
        """Serve `methods` under `service_name`; one mapping may be registered under many names."""
        if service_name in self._services:
            raise ValueError(f"duplicate service {service_name} registered")
        self._services[service_name] = methods

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    async def serve(self, listener: socket.socket) -> None:
        """Accept connections on a bound, listening unix socket until close() or shutdown().

        The listener is closed when serving stops, so late clients are refused, not left waiting.
        """
        loop = asyncio.get_running_loop()
        listener.setblocking(False)
        self._serving += 1
        stop = loop.create_task(self._stop.wait())
        accept: asyncio.Task[tuple[socket.socket, Any]] | None = None
        backoff = 0.0
        try:
            while not self._closing:
                accept = loop.create_task(loop.sock_accept(listener))
                await asyncio.wait({accept, stop}, return_when=asyncio.FIRST_COMPLETED)
                if not accept.done():
                    break
                try:
                    conn, _ = accept.result()
                except OSError as exc:
                    if exc.errno not in _ACCEPT_RETRY:
                        raise
                    backoff = min(_ACCEPT_BACKOFF_MAX, backoff * 2 or 0.001)
                    log.error("ttrpc: failed accept; backoff %.3fs: %s", backoff, exc)
                    await asyncio.sleep(backoff)
                    continue
                finally:
                    accept = None
                backoff = 0.0
                self._accept(conn)
        finally:
            stop.cancel()
            if accept is not None:
                accept.cancel()
                # The accept may have completed in the same loop iteration as the stop.
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    (await accept)[0].close()
            listener.close()
            self._serving -= 1
            self._changed.set()

    def _accept(self, conn: socket.socket) -> None:
        if self._closing:
            conn.close()
            return
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
        self._connections.add(connection)
        connection.start()

    def _connection_closed(self, connection: _Connection) -> None:
        self._connections.discard(connection)
        self._changed.set()
        if self._on_connection_closed is not None:
            try:
                self._on_connection_closed(len(self._connections))
            except Exception:
                log.exception("ttrpc: on_connection_closed callback failed")

    def close(self) -> None:
        """Stop accepting and drop every connection now; calls in flight are cancelled."""
        self._begin_closing()
        for connection in list(self._connections):
            connection.abort()

    async def shutdown(self) -> None:
        """Stop accepting, let calls in flight be answered, close connections as they go idle.

        Waits without limit, like Go's Shutdown without a deadline: wrap it in asyncio.timeout()
        and fall back to close() if a stuck handler must not hold the shim up.
        """
        self._begin_closing()
        for connection in list(self._connections):
            connection.close_when_idle()
        await self.wait_closed()

    def _begin_closing(self) -> None:
        self._closing = True
        self._stop.set()

    async def wait_closed(self) -> None:
        """Wait until no serve() loop runs and every connection is closed."""
        while self._serving or self._connections:
            self._changed.clear()
            await self._changed.wait()

    def _lookup(self, call: CallRequested) -> Method | TTRPCError:
        methods = self._services.get(call.service)
        if methods is None:
            return TTRPCError(Code.UNIMPLEMENTED, f"service {call.service}")
        method = methods.get(call.method)
        if method is None:
            return TTRPCError(Code.UNIMPLEMENTED, f"method {call.method}")
        return method


async def _invoke(protocol: ServerProtocol, call: CallRequested, method: Method) -> bytes:
    """Run one handler and encode its answer; every failure becomes a status, never an exception."""
    try:
        request = method.request_type.FromString(call.payload)
    except DecodeError as exc:
        return protocol.respond_error(
            call.stream_id, Code.INTERNAL, f"ttrpc: error unmarshalling payload: {exc}"
        )
    loop = asyncio.get_running_loop()
    context = CallContext(
        service=call.service,
        method=call.method,
        metadata=call.metadata,
        deadline=loop.time() + call.timeout_nano / 1e9 if call.timeout_nano else None,
    )
    try:
        response = await method.handler(request, context)
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
    """One accepted connection: a read loop plus one task per call in flight."""

    def __init__(self, server: Server, sock: socket.socket) -> None:
        self._server = server
        self._sock = sock
        self._protocol = ServerProtocol()
        self._calls: set[asyncio.Task[None]] = set()
        self._writer: asyncio.StreamWriter | None = None
        self._close_when_idle = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        writer: asyncio.StreamWriter | None = None
        try:
            reader, writer = await asyncio.open_unix_connection(sock=self._sock)
            self._writer = writer
            while not writer.is_closing():
                data = await reader.read(_READ_SIZE)
                if not data:
                    break
                for event in self._protocol.receive_data(data):
                    if isinstance(event, ProtocolReply):
                        self._write(event.data)
                    else:
                        self._dispatch(event)
                # Stop reading while the peer is not reading our replies.
                await writer.drain()
        except OSError as exc:  # includes ConnectionError: the peer went away mid-write
            log.debug("ttrpc: connection ended: %s", exc)
        except Exception:
            # Malformed input never gets here (protocol.py answers it); this is a bug in pyrunc.
            # It must end this connection only, never the server.
            log.exception("ttrpc: connection failed")
        finally:
            try:
                for call in self._calls:
                    call.cancel()
                if writer is None:
                    self._sock.close()
                else:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
            finally:
                # Even if this task is cancelled while closing, the server must stop counting it.
                self._server._connection_closed(self)

    def _dispatch(self, call: CallRequested) -> None:
        method = self._server._lookup(call)
        if isinstance(method, TTRPCError):
            self._write(self._protocol.respond_error(call.stream_id, method.code, method.message))
            return
        task = asyncio.get_running_loop().create_task(self._answer(call, method))
        self._calls.add(task)
        task.add_done_callback(self._call_done)

    async def _answer(self, call: CallRequested, method: Method) -> None:
        self._write(await _invoke(self._protocol, call, method))
        if self._writer is not None:
            with contextlib.suppress(ConnectionError):
                await self._writer.drain()

    def _call_done(self, task: asyncio.Task[None]) -> None:
        self._calls.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("ttrpc: call task failed", exc_info=task.exception())
        if self._close_when_idle and not self._calls:
            self._close()

    def _write(self, frame: bytes) -> None:
        # One write() per frame: the transport queues it whole, so replies never interleave.
        if self._writer is None or self._writer.is_closing():
            log.debug("ttrpc: connection closed, dropping a reply")
            return
        self._writer.write(frame)

    def _close(self) -> None:
        # Closing the transport flushes queued replies first, then ends the read loop with EOF.
        if self._writer is not None:
            self._writer.close()
        elif self._task is not None:
            self._task.cancel()

    def close_when_idle(self) -> None:
        self._close_when_idle = True
        if not self._calls:
            self._close()

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.transport.abort()
        elif self._task is not None:
            self._task.cancel()
