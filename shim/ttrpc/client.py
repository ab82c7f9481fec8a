"""ttrpc client: the asyncio layer over ClientProtocol, for calls from the shim to containerd.

The shim's only outgoing calls are events Forward (protocol-facts §3.1), but the client is general:
many calls may be in flight on one connection, each waiting for the Response on its stream id.
ttrpc has no cancel message, so a call that times out or is cancelled just forgets its stream;
a Response that arrives later is dropped, as Go's client does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TypeVar

from google.protobuf.message import DecodeError, Message  # type: ignore[import-untyped, unused-ignore]

from .protocol import ClientProtocol, ResponseReceived
from .status import Code, TTRPCError

log = logging.getLogger("pyrunc.ttrpc")

RespT = TypeVar("RespT", bound=Message)

_READ_SIZE = 256 * 1024


class ClientClosedError(ConnectionError):
    """The connection is closed or broke; calls in flight and later calls fail with this."""


class Client:
    """One ttrpc connection. Create it with `await Client.connect(path)`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._protocol = ClientProtocol()
        self._writer = writer
        self._pending: dict[int, asyncio.Future[ResponseReceived]] = {}
        self._closed_reason: str | None = None
        self._reader_task = asyncio.get_running_loop().create_task(self._read_loop(reader))

    @classmethod
    async def connect(cls, path: str, timeout: float = 5.0) -> Client:
        """Dial a unix socket; containerd's addresses may carry a `unix://` prefix."""
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(path.removeprefix("unix://"))
        return cls(reader, writer)

    @property
    def closed(self) -> bool:
        return self._closed_reason is not None

    async def call(
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
        if self._closed_reason is not None:
            raise ClientClosedError(self._closed_reason)
        # The server learns the deadline from timeout_nano; 0 would mean "none", so round up.
        timeout_nano = 0 if timeout is None else max(1, int(timeout * 1e9))
        stream_id, frame = self._protocol.request(
            service, method, request.SerializeToString(), metadata, timeout_nano
        )
        future: asyncio.Future[ResponseReceived] = asyncio.get_running_loop().create_future()
        self._pending[stream_id] = future
        try:
            async with asyncio.timeout(timeout):
                self._writer.write(frame)
                try:
                    await self._writer.drain()
                except ConnectionError as exc:
                    raise ClientClosedError(f"ttrpc: closed: {exc}") from exc
                response = await future
        finally:
            # Whatever happened, this stream is forgotten: a late Response will be dropped.
            self._pending.pop(stream_id, None)
            if future.done() and not future.cancelled():
                future.exception()  # mark it retrieved; the failure was raised above or is moot
        if response.status_code != Code.OK:
            raise TTRPCError(response.status_code, response.status_message)
        try:
            message: RespT = response_type.FromString(response.payload)
        except DecodeError as exc:
            raise TTRPCError(Code.INTERNAL, f"ttrpc: error unmarshalling payload: {exc}") from exc
        return message

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        reason = "ttrpc: closed"
        try:
            while data := await reader.read(_READ_SIZE):
                for response in self._protocol.receive_data(data):
                    future = self._pending.get(response.stream_id)
                    if future is None or future.done():
                        log.debug("ttrpc: dropping response for stream %d", response.stream_id)
                        continue
                    future.set_result(response)
        except OSError as exc:
            reason = f"ttrpc: closed: {exc}"
        except Exception:
            # Responses are decoded defensively (protocol.py), so this is a bug in pyrunc.
            log.exception("ttrpc: client read loop failed")
        finally:
            self._shut(reason)

    def _shut(self, reason: str) -> None:
        if self._closed_reason is None:
            self._closed_reason = reason
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ClientClosedError(self._closed_reason))
        self._writer.close()

    def close(self) -> None:
        """Close the connection; calls in flight fail with ClientClosedError."""
        self._shut("ttrpc: closed")

    async def wait_closed(self) -> None:
        await self._reader_task  # it never raises: it ends the connection instead
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
        await self.wait_closed()
