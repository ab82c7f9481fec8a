"""ttrpc client: blocking calls over ClientProtocol, for calls from the shim to containerd.

The shim's only outgoing calls are events Forward (protocol-facts §3.1), but the client is general:
any number of threads may call at once on one connection, each waiting for the Response on its
stream id, which one reader thread ("ttrpc-client") routes to it. ttrpc has no cancel message, so
a call that times out just forgets its stream; a Response that arrives later is dropped, as Go's
client does.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time

from google.protobuf.message import DecodeError, Message  # type: ignore[import-untyped, unused-ignore]

from .. import log
from .protocol import ClientProtocol
from .status import Code, TTRPCError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from types import TracebackType
    from typing import TypeVar

    from .protocol import ResponseReceived

    RespT = TypeVar("RespT", bound=Message)


_READ_SIZE = 256 * 1024
# Most reads are one small frame; a 256 KiB buffer costs a fresh mmap()/munmap() from
# malloc each time (7 us against 0.5). Large reads only while a read fills its buffer.
_READ_SMALL = 64 * 1024
_TIMEVAL = struct.Struct("@ll")  # struct timeval: tv_sec, tv_usec


class ClientClosedError(ConnectionError):
    """The connection is closed or broke; calls in flight and later calls fail with this."""


class _Waiter:
    """One call's rendezvous with the reader: a lock held until the outcome is in."""

    __slots__ = ("error", "lock", "response")

    def __init__(self) -> None:
        # A plain lock is the cheapest one-shot signal: acquired now, released by the reader.
        self.lock = threading.Lock()
        self.lock.acquire()
        self.response: ResponseReceived | None = None
        self.error: ClientClosedError | None = None


class Client:
    """One ttrpc connection. Create it with `Client.connect(path)`; thread-safe."""

    def __init__(self, sock: socket.socket) -> None:
        """Take over a connected unix socket."""
        sock.settimeout(None)  # blocking: the reader waits in recv(), writers in sendall()
        self._sock = sock
        self._protocol = ClientProtocol()
        # `_write` makes the choice of a stream id and the sending of its frame one step (ids
        # must reach the server in increasing order); `_lock` guards `_pending` and the state.
        # Order: `_write`, then `_lock`.
        self._write = threading.Lock()
        self._lock = threading.Lock()
        self._pending: dict[int, _Waiter] = {}
        self._closed_reason: str | None = None
        self._reader = threading.Thread(target=self._read_loop, name="ttrpc-client", daemon=True)
        self._reader.start()

    @classmethod
    def connect(cls, address: str, timeout: float | None = None) -> Client:
        """Dial a unix socket; containerd's addresses may carry a `unix://` prefix.

        `timeout` bounds the connect (a full backlog makes it wait); None waits as long as it
        takes. Raises OSError (TimeoutError when the time ran out).
        """
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            if timeout is not None:
                # A unix connect() waits for room in the backlog only if blocking (a timeout
                # on the socket makes it fail at once with EAGAIN), and then at most SO_SNDTIMEO.
                # 0 would mean no limit, hence at least a microsecond.
                seconds, micros = divmod(max(1, round(timeout * 1e6)), 1_000_000)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                                _TIMEVAL.pack(seconds, micros))
            try:
                sock.connect(address.removeprefix("unix://"))
            except BlockingIOError as exc:
                raise TimeoutError(f"ttrpc: connect {address}: timed out") from exc
            if timeout is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _TIMEVAL.pack(0, 0))
        except BaseException:
            sock.close()
            raise
        return cls(sock)

    @property
    def closed(self) -> bool:
        return self._closed_reason is not None

    def call(
        self,
        service: str,
        method: str,
        request: Message,
        response_type: type[RespT],
        *,
        timeout: float | None = None,
        metadata: Mapping[str, str | Sequence[str]] | None = None,
    ) -> RespT:
        """One unary call. Raises TTRPCError for a non-OK status, ClientClosedError when the
        connection is gone, and TimeoutError when `timeout` (seconds) runs out."""
        deadline = None if timeout is None else time.monotonic() + timeout
        # The server learns the deadline from timeout_nano; 0 would mean "none", so round up.
        timeout_nano = 0 if timeout is None else max(1, int(timeout * 1e9))
        payload = request.SerializeToString()
        waiter = _Waiter()
        if not self._write.acquire(timeout=_left(deadline, -1)):
            raise TimeoutError("ttrpc: timed out waiting to send the request")
        try:
            with self._lock:
                if self._closed_reason is not None:
                    raise ClientClosedError(self._closed_reason)
                stream_id, frame = self._protocol.request(
                    service, method, payload, metadata, timeout_nano
                )
                # Registered before the frame leaves: the reply may come back at once.
                self._pending[stream_id] = waiter
            try:
                self._send(frame, deadline)
            except BaseException:
                with self._lock:
                    self._pending.pop(stream_id, None)
                raise
        finally:
            self._write.release()
        if not waiter.lock.acquire(timeout=_left(deadline, -1)):
            with self._lock:
                # Forget the stream, so that a late reply is dropped; unless the reader (or
                # close) took it first, and is about to hand over the outcome.
                answered = self._pending.pop(stream_id, None) is None
            if not answered:
                raise TimeoutError(f"ttrpc: {service}/{method}: no reply within {timeout}s")
            waiter.lock.acquire()
        if waiter.error is not None:
            raise waiter.error
        response = waiter.response
        assert response is not None
        if response.status_code != Code.OK:
            raise TTRPCError(response.status_code, response.status_message)
        try:
            message: RespT = response_type.FromString(response.payload)
        except DecodeError as exc:
            raise TTRPCError(Code.INTERNAL, f"ttrpc: error unmarshalling payload: {exc}") from exc
        return message

    def _send(self, frame: bytes, deadline: float | None) -> None:
        """Write one whole frame (holding `_write`), within the call's deadline if it has one."""
        try:
            if deadline is None:
                self._sock.sendall(frame)
                return
            # sendall() cannot be given a deadline without a timeout on the socket, which
            # the reader shares; so: non-blocking sends, and poll for room in between.
            view = memoryview(frame)
            sent = 0
            poller: select.poll | None = None
            while sent < len(view):
                try:
                    sent += self._sock.send(view[sent:], socket.MSG_DONTWAIT)
                    continue
                except BlockingIOError:
                    pass
                if poller is None:
                    poller = select.poll()
                    poller.register(self._sock, select.POLLOUT)
                left = _left(deadline, 0.0)
                if left <= 0 or not poller.poll(left * 1000):
                    if sent:
                        # Half a frame is on the wire: nothing else can follow it.
                        self._shut("ttrpc: closed: a request was cut short by its timeout")
                    raise TimeoutError("ttrpc: timed out sending the request")
        except TimeoutError:
            raise
        except OSError as exc:  # EPIPE, ECONNRESET: the server is gone
            self._shut(f"ttrpc: closed: {exc}")
            raise ClientClosedError(self._closed_reason) from exc

    def _read_loop(self) -> None:
        reason = "ttrpc: closed"
        try:
            size = _READ_SMALL
            while data := self._sock.recv(size):
                size = _READ_SIZE if len(data) == size else _READ_SMALL
                for response in self._protocol.receive_data(data):
                    with self._lock:
                        waiter = self._pending.pop(response.stream_id, None)
                    if waiter is None:
                        log.debug("ttrpc: dropping response for stream %d", response.stream_id)
                        continue
                    waiter.response = response
                    waiter.lock.release()
        except OSError as exc:
            reason = f"ttrpc: closed: {exc}"
        except Exception:
            # Responses are decoded defensively (protocol.py), so this is a bug in pyrunc.
            log.exception("ttrpc: client read loop failed")
        finally:
            self._shut(reason)
            # Closed here only, once no call can be in the middle of writing (`_write`).
            with self._write:
                self._sock.close()

    def _shut(self, reason: str) -> None:
        """Fail every call in flight and wake the reader; later calls fail at once."""
        with self._lock:
            if self._closed_reason is not None:
                return
            self._closed_reason = reason
            waiters = list(self._pending.values())
            self._pending.clear()
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError as exc:
                log.debug("ttrpc: shutting the connection down: %s", exc)
        for waiter in waiters:
            waiter.error = ClientClosedError(reason)
            waiter.lock.release()

    def close(self) -> None:
        """Close the connection and wait for its reader; calls in flight fail with
        ClientClosedError."""
        self._shut("ttrpc: closed")
        if threading.current_thread() is not self._reader:
            self._reader.join()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _left(deadline: float | None, none: float) -> float:
    """Seconds until `deadline` (never negative), or `none` when there is no deadline."""
    if deadline is None:
        return none
    return max(0.0, deadline - time.monotonic())
