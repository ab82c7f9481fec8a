"""ttrpc codec and connection rules (pyrunc.shim.ttrpc.protocol), byte-exact, without sockets."""

from __future__ import annotations

from pyrunc.protos import ttrpc_pb2
from pyrunc.shim.ttrpc.frame import MAX_MESSAGE, MessageType, encode_frame
from pyrunc.shim.ttrpc.protocol import (
    CallRequested,
    ClientProtocol,
    ProtocolReply,
    ResponseReceived,
    ServerProtocol,
)
from pyrunc.shim.ttrpc.status import Code

# protocol-facts §1.9: Connect on stream 1 with the namespace "default".
CONNECT_FRAME = (
    bytes.fromhex("00000052 00000001 01 00")
    + bytes.fromhex("0a17")
    + b"containerd.task.v2.Task"
    + bytes.fromhex("1207")
    + b"Connect"
    + bytes.fromhex("1a07 0a05")
    + b"redis"
    + bytes.fromhex("2a25 0a1a")
    + b"containerd-namespace-ttrpc"
    + bytes.fromhex("1207")
    + b"default"
)
EMPTY_REPLY_STREAM_5 = bytes.fromhex("00000000 00000005 02 00")
NOT_FOUND_REPLY_STREAM_9 = (
    bytes.fromhex("00000026 00000009 02 00 0a24 0805 1220") + b"container not created: not found"
)


def request_frame(stream_id: int, method: str = "Connect", payload: bytes = b"") -> bytes:
    request = ttrpc_pb2.Request(service="svc", method=method, payload=payload)
    return encode_frame(stream_id, MessageType.REQUEST, request.SerializeToString())


def reply_status(reply: object) -> tuple[int, int, str]:
    """Decode a ProtocolReply the way a client would: (stream id, code, message)."""
    assert isinstance(reply, ProtocolReply)
    [response] = ClientProtocol().receive_data(reply.data)
    assert response.stream_id == reply.stream_id
    return response.stream_id, response.status_code, response.status_message


def test_connect_vector_decodes_to_call_requested() -> None:
    assert ServerProtocol().receive_data(CONNECT_FRAME) == [
        CallRequested(
            stream_id=1,
            service="containerd.task.v2.Task",
            method="Connect",
            payload=b"\x0a\x05redis",
            metadata={"containerd-namespace-ttrpc": ["default"]},
            timeout_nano=0,
        )
    ]


def test_client_encodes_connect_exactly_like_containerd() -> None:
    stream_id, data = ClientProtocol().request(
        "containerd.task.v2.Task",
        "Connect",
        b"\x0a\x05redis",
        {"containerd-namespace-ttrpc": "default"},
    )
    assert (stream_id, data) == (1, CONNECT_FRAME)


def test_empty_success_reply_is_a_zero_length_response_frame() -> None:
    assert ServerProtocol().respond(5, b"") == EMPTY_REPLY_STREAM_5


def test_not_found_reply_matches_the_go_bytes() -> None:
    reply = ServerProtocol().respond_error(9, Code.NOT_FOUND, "container not created: not found")
    assert reply == NOT_FOUND_REPLY_STREAM_9


def test_client_reads_the_reply_vectors() -> None:
    client = ClientProtocol()
    assert client.receive_data(EMPTY_REPLY_STREAM_5 + NOT_FOUND_REPLY_STREAM_9) == [
        ResponseReceived(5, Code.OK, "", b""),
        ResponseReceived(9, Code.NOT_FOUND, "container not created: not found", b""),
    ]


def test_connect_split_at_every_byte_boundary() -> None:
    whole = ServerProtocol().receive_data(CONNECT_FRAME)
    for cut in range(len(CONNECT_FRAME) + 1):
        server = ServerProtocol()
        events = server.receive_data(CONNECT_FRAME[:cut]) + server.receive_data(CONNECT_FRAME[cut:])
        assert events == whole, cut


def test_two_requests_in_one_read() -> None:
    events = ServerProtocol().receive_data(request_frame(1, "A") + request_frame(3, "B"))
    assert [(e.stream_id, e.method) for e in events if isinstance(e, CallRequested)] == [
        (1, "A"),
        (3, "B"),
    ]


def test_metadata_keeps_repeated_keys_and_timeout() -> None:
    request = ttrpc_pb2.Request(
        service="s",
        method="m",
        timeout_nano=5_000_000_000,
        metadata=[
            ttrpc_pb2.KeyValue(key="k", value="1"),
            ttrpc_pb2.KeyValue(key="other", value="x"),
            ttrpc_pb2.KeyValue(key="k", value="2"),
        ],
    )
    [event] = ServerProtocol().receive_data(encode_frame(1, 1, request.SerializeToString()))
    assert isinstance(event, CallRequested)
    assert event.metadata == {"k": ["1", "2"], "other": ["x"]}
    assert event.timeout_nano == 5_000_000_000


def test_even_stream_id_is_answered_on_that_id_with_invalid_argument() -> None:
    [reply] = ServerProtocol().receive_data(request_frame(2))
    assert reply_status(reply) == (
        2,
        Code.INVALID_ARGUMENT,
        "StreamID must be odd for client initiated streams",
    )


def test_reused_or_decreasing_stream_id_is_refused() -> None:
    server = ServerProtocol()
    assert isinstance(server.receive_data(request_frame(3))[0], CallRequested)
    for stream_id in (3, 1):
        [reply] = server.receive_data(request_frame(stream_id))
        assert reply_status(reply) == (
            stream_id,
            Code.INVALID_ARGUMENT,
            "StreamID cannot be re-used and must increment",
        )
    assert isinstance(server.receive_data(request_frame(5))[0], CallRequested)


def test_garbage_request_is_answered_with_unmarshal_error_and_uses_up_its_id() -> None:
    server = ServerProtocol()
    [reply] = server.receive_data(encode_frame(1, MessageType.REQUEST, b"\xff\xff\xff"))
    stream_id, code, message = reply_status(reply)
    assert (stream_id, code) == (1, Code.INVALID_ARGUMENT)
    assert message.startswith("unmarshal request error: ")
    [again] = server.receive_data(request_frame(1))
    assert reply_status(again)[2] == "StreamID cannot be re-used and must increment"


def test_oversized_request_is_discarded_answered_with_code_8_and_next_frame_decoded() -> None:
    length = MAX_MESSAGE + 1
    server = ServerProtocol()
    header = length.to_bytes(4, "big") + (7).to_bytes(4, "big") + b"\x01\x00"
    [reply] = server.receive_data(header + bytes(1000))
    assert reply_status(reply) == (
        7,
        Code.RESOURCE_EXHAUSTED,
        "message length 4194305 exceed maximum message size of 4194304",
    )
    assert server.receive_data(bytes(length - 1000)) == []
    [event] = server.receive_data(request_frame(9))
    assert isinstance(event, CallRequested) and event.stream_id == 9


def test_response_data_and_unknown_frames_from_a_client_are_ignored() -> None:
    server = ServerProtocol()
    junk = (
        encode_frame(1, MessageType.RESPONSE, b"\xff")
        + encode_frame(3, MessageType.DATA, b"x", flags=0x05)
        + encode_frame(5, 0x42, b"")
    )
    assert server.receive_data(junk) == []
    # Ignored frames do not move the stream id mark: a Request on 1 is still new.
    assert isinstance(server.receive_data(request_frame(1))[0], CallRequested)


def test_success_reply_carries_payload_and_no_status() -> None:
    reply = ServerProtocol().respond(3, b"\x08\x01")
    assert reply == bytes.fromhex("00000004 00000003 02 00 1202 0801")


def test_reply_of_exactly_max_message_is_sent() -> None:
    # A Response's payload field costs 5 bytes of overhead at this size (tag + 4-byte varint).
    reply = ServerProtocol().respond(1, bytes(MAX_MESSAGE - 5))
    assert len(reply) == 10 + MAX_MESSAGE


def test_reply_over_max_message_is_replaced_by_resource_exhausted() -> None:
    reply = ServerProtocol().respond(1, bytes(MAX_MESSAGE - 4))
    assert ClientProtocol().receive_data(reply) == [
        ResponseReceived(
            1,
            Code.RESOURCE_EXHAUSTED,
            "message length 4194305 exceed maximum message size of 4194304",
            b"",
        )
    ]


def test_error_text_that_is_not_utf8_still_encodes() -> None:
    reply = ServerProtocol().respond_error(1, Code.NOT_FOUND, "no /tmp/\udcff: not found")
    [response] = ClientProtocol().receive_data(reply)
    assert response.status_message == "no /tmp/\\udcff: not found"


def test_client_stream_ids_are_odd_and_increasing() -> None:
    client = ClientProtocol()
    assert [client.request("s", "m", b"")[0] for _ in range(4)] == [1, 3, 5, 7]


def test_client_lowercases_keys_and_sends_every_value() -> None:
    _, data = ClientProtocol().request("s", "m", b"", {"X-Trace": ["a", "b"], "ns": "default"}, 7)
    request = ttrpc_pb2.Request.FromString(data[10:])
    assert [(kv.key, kv.value) for kv in request.metadata] == [
        ("x-trace", "a"),
        ("x-trace", "b"),
        ("ns", "default"),
    ]
    assert request.timeout_nano == 7


def test_client_treats_explicit_empty_status_as_ok() -> None:
    frame = encode_frame(1, MessageType.RESPONSE, bytes.fromhex("0a00 1201 41"))
    assert ClientProtocol().receive_data(frame) == [ResponseReceived(1, 0, "", b"A")]


def test_client_reports_oversized_and_garbled_responses_on_their_stream() -> None:
    length = MAX_MESSAGE + 1
    header = length.to_bytes(4, "big") + (3).to_bytes(4, "big") + b"\x02\x00"
    events = ClientProtocol().receive_data(
        header + bytes(length) + encode_frame(5, MessageType.RESPONSE, b"\xff\xff")
    )
    assert [(e.stream_id, e.status_code) for e in events] == [
        (3, Code.RESOURCE_EXHAUSTED),
        (5, Code.INTERNAL),
    ]


def test_client_ignores_data_and_request_frames() -> None:
    frames = encode_frame(1, MessageType.DATA, b"x") + encode_frame(2, MessageType.REQUEST, b"")
    assert ClientProtocol().receive_data(frames) == []
