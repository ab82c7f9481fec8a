"""ttrpc codec and connection rules, with no I/O (the h11 model).

Bytes go in (`receive_data`), events come out; replies go in (`respond`), bytes come out. Everything
that decides how a connection reacts to what the peer sent lives in this file. ServerProtocol keeps
the rules of containerd/ttrpc's server.go (v1.2), checked in this order for each frame:

    frame                               answer
    data length over 4 MiB (any type)   code 8 "message length N exceed maximum message size of
                                        4194304" on that stream id; its bytes are discarded
    even stream id (any type)           code 3 "StreamID must be odd for client initiated streams"
    Request, id not above the last      code 3 "StreamID cannot be re-used and must increment"
    Request that does not decode        code 3 "unmarshal request error: ..."
    Request                             CallRequested: the I/O layer runs the handler
    Response, Data, unknown type        ignored (pyrunc serves unary calls only)

Replies never exceed 4 MiB: one that would is replaced by a code 8 status, because Go clients up
to v1.1.2 (containerd 1.6) panic on an oversized frame and v1.2.6+ servers drop the connection.
Looking up services and methods is the server's business (server.py), not the wire's.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError  # type: ignore[import-untyped, unused-ignore]

from pyrunc.protos import status_pb2, ttrpc_pb2

from .frame import (
    MAX_MESSAGE,
    Frame,
    FrameDecoder,
    MessageType,
    OversizedFrame,
    OversizedMessageError,
    Value,
    encode_frame,
    oversized_message,
)
from .status import Code, TTRPCError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

# Stream ids are uint32 on the wire; a client that used them all must reconnect.
_LAST_STREAM_ID = 0xFFFF_FFFF
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1  # google.rpc.Status.code is an int32


class CallRequested(Value):
    """A decoded Request for a handler to answer with respond() or respond_error()."""

    _fields = ("stream_id", "service", "method", "payload", "metadata", "timeout_nano")
    __slots__ = _fields
    stream_id: int
    service: str
    method: str
    payload: bytes
    # A key may repeat on the wire; its values are kept in arrival order.
    metadata: dict[str, list[str]]
    timeout_nano: int  # time left before the caller's deadline; 0 means none

    def __init__(self, stream_id: int, service: str, method: str, payload: bytes,
                 metadata: dict[str, list[str]], timeout_nano: int) -> None:
        super().__init__(stream_id, service, method, payload, metadata, timeout_nano)

    def __hash__(self) -> int:  # (its metadata is a dict)
        return hash((self.stream_id, self.service, self.method))


class ProtocolReply(Value):
    """An error Response the protocol itself produced; the I/O layer just writes `data`."""

    _fields = ("stream_id", "data")
    __slots__ = _fields
    stream_id: int
    data: bytes

    def __init__(self, stream_id: int, data: bytes) -> None:
        super().__init__(stream_id, data)


class ResponseReceived(Value):
    _fields = ("stream_id", "status_code", "status_message", "payload")
    __slots__ = _fields
    stream_id: int
    status_code: int  # 0 when the Response carried no status, as Go servers send on success
    status_message: str
    payload: bytes

    def __init__(self, stream_id: int, status_code: int, status_message: str,
                 payload: bytes) -> None:
        super().__init__(stream_id, status_code, status_message, payload)


ServerEvent = CallRequested | ProtocolReply


def _encode_response(stream_id: int, response: ttrpc_pb2.Response) -> bytes:
    return encode_frame(stream_id, MessageType.RESPONSE, response.SerializeToString())


class ServerProtocol:
    """One server connection's state: the frame decoder and the last stream id seen."""

    def __init__(self) -> None:
        self._decoder = FrameDecoder()
        self._last_stream_id = 0

    def receive_data(self, data: bytes) -> list[ServerEvent]:
        self._decoder.feed(data)
        events: list[ServerEvent] = []
        for item in self._decoder:
            event = self._handle(item)
            if event is not None:
                events.append(event)
        return events

    def _handle(self, item: Frame | OversizedFrame) -> ServerEvent | None:
        if isinstance(item, OversizedFrame):
            return self._reject(
                item.stream_id, Code.RESOURCE_EXHAUSTED, oversized_message(item.length)
            )
        if item.stream_id % 2 != 1:
            # Even ids are reserved for server-initiated streams, which ttrpc never opens.
            return self._reject(
                item.stream_id,
                Code.INVALID_ARGUMENT,
                "StreamID must be odd for client initiated streams",
            )
        if item.type != MessageType.REQUEST:
            return None
        if item.stream_id <= self._last_stream_id:
            return self._reject(
                item.stream_id,
                Code.INVALID_ARGUMENT,
                "StreamID cannot be re-used and must increment",
            )
        # Go moves the mark before decoding, so even a garbled Request uses up its id.
        self._last_stream_id = item.stream_id
        try:
            request = ttrpc_pb2.Request.FromString(item.data)
        except DecodeError as exc:
            return self._reject(
                item.stream_id, Code.INVALID_ARGUMENT, f"unmarshal request error: {exc}"
            )
        metadata: dict[str, list[str]] = {}
        for entry in request.metadata:
            metadata.setdefault(entry.key, []).append(entry.value)
        return CallRequested(
            stream_id=item.stream_id,
            service=request.service,
            method=request.method,
            payload=request.payload,
            metadata=metadata,
            timeout_nano=request.timeout_nano,
        )

    def _reject(self, stream_id: int, code: int, message: str) -> ProtocolReply:
        return ProtocolReply(stream_id, self.respond_error(stream_id, code, message))

    def respond(self, stream_id: int, payload: bytes) -> bytes:
        """A success Response frame. Go leaves `status` out, so an Empty reply has length 0."""
        response = ttrpc_pb2.Response(payload=payload)
        size = response.ByteSize()
        if size > MAX_MESSAGE:
            return self.respond_error(stream_id, Code.RESOURCE_EXHAUSTED, oversized_message(size))
        return _encode_response(stream_id, response)

    def respond_error(self, stream_id: int, code: int, message: str) -> bytes:
        """An error Response frame; `payload` is omitted, as Go does."""
        if not _INT32_MIN <= code <= _INT32_MAX:
            code = Code.UNKNOWN
        # Error text often quotes file names decoded with surrogateescape; protobuf strings
        # must be valid UTF-8, and an error reply must never fail to encode.
        message = message.encode("utf-8", "backslashreplace").decode("utf-8")
        response = ttrpc_pb2.Response(status=status_pb2.Status(code=code, message=message))
        size = response.ByteSize()
        if size > MAX_MESSAGE:
            # Only a handler's absurdly long error text gets here; the short text always fits.
            return self.respond_error(stream_id, Code.RESOURCE_EXHAUSTED, oversized_message(size))
        return _encode_response(stream_id, response)


def _metadata_entries(
    metadata: Mapping[str, str | Sequence[str]] | None,
) -> list[ttrpc_pb2.KeyValue]:
    entries = []
    for key, values in (metadata or {}).items():
        # ttrpc's MD.Set lower-cases keys, and containerd looks them up lower-cased.
        for value in [values] if isinstance(values, str) else values:
            entries.append(ttrpc_pb2.KeyValue(key=key.lower(), value=value))
    return entries


class ClientProtocol:
    """One client connection's state: the frame decoder and the next stream id."""

    def __init__(self) -> None:
        self._decoder = FrameDecoder()
        self._next_stream_id = 1

    def request(
        self,
        service: str,
        method: str,
        payload: bytes,
        metadata: Mapping[str, str | Sequence[str]] | None = None,
        timeout_nano: int = 0,
    ) -> tuple[int, bytes]:
        """A Request frame on a new stream: ids are odd, start at 1 and strictly increase."""
        if self._next_stream_id > _LAST_STREAM_ID:
            raise TTRPCError(Code.RESOURCE_EXHAUSTED, "ttrpc: stream ids exhausted, reconnect")
        request = ttrpc_pb2.Request(
            service=service,
            method=method,
            payload=payload,
            timeout_nano=timeout_nano,
            metadata=_metadata_entries(metadata),
        )
        stream_id = self._next_stream_id
        try:
            data = encode_frame(stream_id, MessageType.REQUEST, request.SerializeToString())
        except OversizedMessageError as exc:
            # Refused before it is sent, as Go's client does: the same status a server would give.
            raise TTRPCError(Code.RESOURCE_EXHAUSTED, str(exc)) from exc
        self._next_stream_id += 2
        return stream_id, data

    def receive_data(self, data: bytes) -> list[ResponseReceived]:
        self._decoder.feed(data)
        events = []
        for item in self._decoder:
            if isinstance(item, OversizedFrame):
                # ttrpc v1.2 clients report this on the stream and carry on.
                events.append(
                    ResponseReceived(
                        item.stream_id, Code.RESOURCE_EXHAUSTED, oversized_message(item.length), b""
                    )
                )
            elif item.type == MessageType.RESPONSE:
                events.append(self._decode_response(item))
            # A unary client has no use for Data or Request frames from the server: ignored.
        return events

    @staticmethod
    def _decode_response(frame: Frame) -> ResponseReceived:
        try:
            response = ttrpc_pb2.Response.FromString(frame.data)
        except DecodeError as exc:
            return ResponseReceived(
                frame.stream_id, Code.INTERNAL, f"ttrpc: error unmarshalling response: {exc}", b""
            )
        if not response.HasField("status"):
            return ResponseReceived(frame.stream_id, Code.OK, "", response.payload)
        return ResponseReceived(
            frame.stream_id, response.status.code, response.status.message, response.payload
        )
