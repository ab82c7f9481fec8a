"""Arbitrary bytes in arbitrary chunks never make the ttrpc decoders raise or depend on chunking."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from pyrunc.protos import ttrpc_pb2
from pyrunc.shim.ttrpc.frame import MAX_MESSAGE, Frame, FrameDecoder, OversizedFrame, encode_frame
from pyrunc.shim.ttrpc.protocol import (
    CallRequested,
    ClientProtocol,
    ProtocolReply,
    ResponseReceived,
    ServerProtocol,
)

stream_ids = st.one_of(st.integers(0, 12), st.integers(0, 0xFFFF_FFFF))
message_types = st.sampled_from([0, 1, 2, 3, 0x42])


@st.composite
def request_data(draw: st.DrawFn) -> bytes:
    request = ttrpc_pb2.Request(
        service=draw(st.text(max_size=8)),
        method=draw(st.text(max_size=8)),
        payload=draw(st.binary(max_size=16)),
        timeout_nano=draw(st.integers(-(2**63), 2**63 - 1)),
        metadata=[
            ttrpc_pb2.KeyValue(key=key, value=value)
            for key, value in draw(st.lists(st.tuples(st.text(max_size=4), st.text()), max_size=3))
        ],
    )
    return request.SerializeToString()


@st.composite
def pieces(draw: st.DrawFn) -> bytes:
    """A well-formed frame, an oversized header (with some of its data) or raw garbage."""
    kind = draw(st.sampled_from(["frame", "request", "oversized", "garbage"]))
    if kind == "frame":
        return encode_frame(draw(stream_ids), draw(message_types), draw(st.binary(max_size=32)))
    if kind == "request":
        return encode_frame(draw(stream_ids), 1, draw(request_data()))
    if kind == "oversized":
        length = draw(st.integers(MAX_MESSAGE + 1, MAX_MESSAGE + 64))
        header = length.to_bytes(4, "big") + draw(stream_ids).to_bytes(4, "big") + b"\x01\x00"
        # Either all of its data, so that decoding resumes after it, or a truncated part. The
        # filler is 0xff: read out of step, zeros would parse as ~400k empty frames and make
        # the test slow without testing anything more.
        sent = draw(st.sampled_from([length, 0, 1, 100]))
        return header + b"\xff" * sent
    return draw(st.binary(max_size=24))


@st.composite
def wire_and_cuts(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    wire = b"".join(draw(st.lists(pieces(), max_size=8)))
    cuts = sorted(draw(st.lists(st.integers(0, len(wire)), max_size=12)))
    bounds = [0, *cuts, len(wire)]
    return wire, [wire[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=200, deadline=None)
@given(wire_and_cuts())
def test_frame_decoder_output_does_not_depend_on_chunking(
    case: tuple[bytes, list[bytes]],
) -> None:
    wire, chunks = case
    whole = FrameDecoder()
    whole.feed(wire)
    expected = list(whole)
    chunked = FrameDecoder()
    got: list[Frame | OversizedFrame] = []
    for chunk in chunks:
        chunked.feed(chunk)
        got.extend(chunked)
    assert got == expected
    assert all(isinstance(item, Frame | OversizedFrame) for item in got)
    assert chunked.buffered == whole.buffered


@settings(max_examples=200, deadline=None)
@given(wire_and_cuts())
def test_server_protocol_only_emits_defined_events(case: tuple[bytes, list[bytes]]) -> None:
    wire, chunks = case
    expected = ServerProtocol().receive_data(wire)
    server = ServerProtocol()
    got = [event for chunk in chunks for event in server.receive_data(chunk)]
    assert got == expected
    for event in got:
        assert isinstance(event, CallRequested | ProtocolReply)
        if isinstance(event, ProtocolReply):
            # Every reply the protocol writes on its own is one well-formed Response frame.
            [response] = ClientProtocol().receive_data(event.data)
            assert response.stream_id == event.stream_id and response.status_code != 0


@settings(max_examples=200, deadline=None)
@given(wire_and_cuts())
def test_client_protocol_only_emits_responses(case: tuple[bytes, list[bytes]]) -> None:
    wire, chunks = case
    client = ClientProtocol()
    got = [event for chunk in chunks for event in client.receive_data(chunk)]
    assert got == ClientProtocol().receive_data(wire)
    assert all(isinstance(event, ResponseReceived) for event in got)
