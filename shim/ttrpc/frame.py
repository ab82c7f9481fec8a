"""ttrpc framing: bytes <-> frames, with no I/O and no protobuf.

A frame is a 10-byte big-endian header (data length, stream id, message type, flags) followed by
the data. This module knows nothing about what the data means; protocol.py decodes Request and
Response messages from it. The decoder follows containerd/ttrpc's channel.go: a frame longer than
4 MiB does not end the connection, its bytes are skipped and the header is reported so that the
caller can answer ResourceExhausted on that stream.
"""

from __future__ import annotations

import struct
from enum import IntEnum, IntFlag

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import ClassVar, Final

HEADER_LENGTH: Final = 10
MAX_MESSAGE: Final = 4 << 20  # 4,194,304 bytes of data; exactly that much is still allowed

_HEADER: Final = struct.Struct(">IIBB")
_UINT32_MAX: Final = 0xFFFF_FFFF


class MessageType(IntEnum):
    REQUEST = 0x01
    RESPONSE = 0x02
    DATA = 0x03  # streams only (ttrpc >= 1.2); never sent by pyrunc, see protocol-facts §1.8


class Flags(IntFlag):
    REMOTE_CLOSED = 0x01
    REMOTE_OPEN = 0x02
    NO_DATA = 0x04  # Data frames only


def oversized_message(length: int) -> str:
    """The text containerd/ttrpc uses for status 8 on an oversized frame, sent or received."""
    return f"message length {length} exceed maximum message size of {MAX_MESSAGE}"


class OversizedMessageError(ValueError):
    """Refusal to encode a frame whose data exceeds MAX_MESSAGE (Go: OversizedMessageErr)."""

    def __init__(self, length: int) -> None:
        super().__init__(oversized_message(length))
        self.length = length


class Value:
    """An immutable value compared, hashed and shown by its fields, named in order in _fields
    (also its __slots__). No dataclasses: a shim would pay about 0.7 MiB for importing them."""

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *values: object) -> None:
        if len(values) != len(self._fields):
            raise TypeError(f"{type(self).__name__} takes {len(self._fields)} values")
        for name, value in zip(self._fields, values, strict=True):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self._fields)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._fields)
        return f"{type(self).__name__}({shown})"


class Frame(Value):
    _fields = ("stream_id", "type", "flags", "data")
    __slots__ = _fields
    stream_id: int
    # An int rather than MessageType: unknown types must survive decoding so that the protocol
    # layer can ignore them, as Go does for forward compatibility.
    type: int
    flags: int
    data: bytes

    def __init__(self, stream_id: int, type: int, flags: int, data: bytes) -> None:
        super().__init__(stream_id, type, flags, data)


class OversizedFrame(Value):
    """A frame whose length exceeded MAX_MESSAGE; its data was (or is being) discarded."""

    _fields = ("stream_id", "length")
    __slots__ = _fields
    stream_id: int
    length: int

    def __init__(self, stream_id: int, length: int) -> None:
        super().__init__(stream_id, length)


def encode_frame(stream_id: int, message_type: int, data: bytes, flags: int = 0) -> bytes:
    """One whole frame, ready to be written in a single call so frames never interleave."""
    if len(data) > MAX_MESSAGE:
        # Never emit an oversized frame: Go clients up to v1.1.2 (containerd 1.6) panic on one.
        raise OversizedMessageError(len(data))
    if not 0 <= stream_id <= _UINT32_MAX:
        raise ValueError(f"stream id {stream_id} does not fit in 32 bits")
    return _HEADER.pack(len(data), stream_id, message_type, flags) + data


class FrameDecoder:
    """Incremental decoder: feed() whatever the socket returned, then drain next_frame().

    Bytes are kept in one bytearray with a read offset, so many small frames in one read cost no
    copying beyond each frame's data, and a large frame arriving in many reads is appended, not
    re-joined each time. Consumed bytes are dropped once per feed().
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._offset = 0
        # Data bytes of an oversized frame still to be thrown away as they arrive.
        self._discard = 0

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a frame (a partial frame at EOF is truncated)."""
        return len(self._buffer) - self._offset

    def feed(self, data: bytes) -> None:
        # While discarding, the buffer is empty: next_frame() skipped everything it held.
        if self._discard:
            skipped = min(self._discard, len(data))
            self._discard -= skipped
            data = data[skipped:]
        if self._offset:
            del self._buffer[: self._offset]
            self._offset = 0
        self._buffer += data

    def next_frame(self) -> Frame | OversizedFrame | None:
        """The next complete frame or oversized-frame report, or None until more bytes are fed."""
        if self.buffered < HEADER_LENGTH:
            return None
        length, stream_id, message_type, flags = _HEADER.unpack_from(self._buffer, self._offset)
        if length > MAX_MESSAGE:
            # Skip what is already here; feed() drops the rest as it arrives, never buffering it.
            self._offset += HEADER_LENGTH
            skipped = min(length, self.buffered)
            self._offset += skipped
            self._discard = length - skipped
            return OversizedFrame(stream_id, length)
        end = self._offset + HEADER_LENGTH + length
        if len(self._buffer) < end:
            return None
        with memoryview(self._buffer) as view:
            data = bytes(view[self._offset + HEADER_LENGTH : end])
        self._offset = end
        return Frame(stream_id, message_type, flags, data)

    def __iter__(self) -> Iterator[Frame | OversizedFrame]:
        while (item := self.next_frame()) is not None:
            yield item
