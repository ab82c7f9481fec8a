"""ttrpc server and client over real unix sockets (pyrunc.shim.ttrpc.server, .client)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from google.protobuf import empty_pb2, wrappers_pb2

from pyrunc.shim.ttrpc import (
    CallContext,
    Client,
    ClientClosedError,
    Code,
    Method,
    Server,
    TTRPCError,
    not_found,
)
from pyrunc.shim.ttrpc.frame import MAX_MESSAGE, MessageType, encode_frame
from pyrunc.shim.ttrpc.protocol import ClientProtocol
from pyrunc.shim.ttrpc.server import PeerCredentials, credentials_allowed, peer_credentials

T = TypeVar("T")
StringValue = wrappers_pb2.StringValue
SERVICE = "test.v1.Echo"


def run(coro: Coroutine[Any, Any, T], timeout: float = 20) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


async def echo(request: Any, ctx: CallContext) -> Any:
    return StringValue(value=request.value)


def methods(**handlers: Callable[[Any, CallContext], Awaitable[Any]]) -> dict[str, Method]:
    table: dict[str, Method] = {"Echo": Method(StringValue, echo)}
    table.update({name: Method(StringValue, handler) for name, handler in handlers.items()})
    return table


def listen(path: Path) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    return listener


@asynccontextmanager
async def serving(server: Server, path: Path) -> AsyncIterator[Client]:
    """Serve `server` on `path` and yield a connected client; tear everything down after."""
    serve_task = asyncio.create_task(server.serve(listen(path)))
    client = await Client.connect(f"unix://{path}", timeout=5)
    try:
        yield client
    finally:
        client.close()
        await client.wait_closed()
        server.close()
        await server.wait_closed()
        await serve_task


def call(client: Client, method: str, value: str = "", **kwargs: Any) -> Awaitable[Any]:
    return client.call(SERVICE, method, StringValue(value=value), StringValue, **kwargs)


def new_server(**handlers: Callable[[Any, CallContext], Awaitable[Any]]) -> Server:
    server = Server()
    server.register(SERVICE, methods(**handlers))
    return server


def test_unary_call_round_trip(tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(new_server(), tmp_path / "s") as client:
            reply = await call(client, "Echo", "hello")
            assert reply == StringValue(value="hello")

    run(main())


def test_one_method_table_served_under_two_service_names(tmp_path: Path) -> None:
    async def main() -> None:
        server = Server()
        table = methods()
        server.register("containerd.task.v2.Task", table)
        server.register("containerd.task.v3.Task", table)
        async with serving(server, tmp_path / "s") as client:
            for service in ("containerd.task.v2.Task", "containerd.task.v3.Task"):
                reply = await client.call(service, "Echo", StringValue(value="x"), StringValue)
                assert reply.value == "x"
        with pytest.raises(ValueError, match="duplicate service"):
            server.register("containerd.task.v3.Task", table)

    run(main())


def test_empty_reply_round_trip(tmp_path: Path) -> None:
    async def nothing(request: Any, ctx: CallContext) -> Any:
        return empty_pb2.Empty()

    async def main() -> None:
        server = Server()
        server.register(SERVICE, {"Kill": Method(StringValue, nothing)})
        async with serving(server, tmp_path / "s") as client:
            reply = await client.call(SERVICE, "Kill", StringValue(), empty_pb2.Empty)
            assert reply == empty_pb2.Empty()

    run(main())


def test_concurrent_calls_answered_in_completion_order(tmp_path: Path) -> None:
    # Wait stays blocked while containerd sends Kill on the same connection: a server that
    # serialized handlers would deadlock here, since only the fast call releases the slow one.
    released = asyncio.Event()
    finished: list[str] = []

    async def slow(request: Any, ctx: CallContext) -> Any:
        await released.wait()
        return StringValue(value="slow")

    async def fast(request: Any, ctx: CallContext) -> Any:
        released.set()
        return StringValue(value="fast")

    async def main() -> None:
        async with serving(new_server(Slow=slow, Fast=fast), tmp_path / "s") as client:

            async def record(method: str) -> None:
                finished.append((await call(client, method)).value)

            slow_call = asyncio.create_task(record("Slow"))
            await asyncio.sleep(0.05)
            await asyncio.gather(record("Fast"), slow_call)
        assert finished == ["fast", "slow"]

    run(main())


def test_unknown_service_and_method_are_unimplemented(tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(new_server(), tmp_path / "s") as client:
            with pytest.raises(TTRPCError) as caught:
                await client.call("no.such.Service", "Echo", StringValue(), StringValue)
            assert (caught.value.code, caught.value.message) == (
                Code.UNIMPLEMENTED,
                "service no.such.Service",
            )
            with pytest.raises(TTRPCError) as caught:
                await call(client, "Nope")
            assert (caught.value.code, caught.value.message) == (Code.UNIMPLEMENTED, "method Nope")

    run(main())


def test_handler_error_reaches_the_client_with_its_code_and_message(tmp_path: Path) -> None:
    async def missing(request: Any, ctx: CallContext) -> Any:
        raise not_found("container not created")

    async def main() -> None:
        async with serving(new_server(State=missing), tmp_path / "s") as client:
            with pytest.raises(TTRPCError) as caught:
                await call(client, "State")
            assert caught.value.code == Code.NOT_FOUND
            assert caught.value.message == "container not created: not found"

    run(main())


def test_plain_exception_becomes_unknown_and_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(request: Any, ctx: CallContext) -> Any:
        raise RuntimeError("runc did something odd")

    async def main() -> None:
        async with serving(new_server(Broken=broken), tmp_path / "s") as client:
            with pytest.raises(TTRPCError) as caught:
                await call(client, "Broken")
            assert (caught.value.code, caught.value.message) == (
                Code.UNKNOWN,
                "runc did something odd",
            )
            assert (await call(client, "Echo", "still here")).value == "still here"

    with caplog.at_level(logging.ERROR, logger="pyrunc.ttrpc"):
        run(main())
    assert any(r.name == "pyrunc.ttrpc" and r.exc_info for r in caplog.records)


def test_undecodable_payload_is_internal(tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(new_server(), tmp_path / "s") as client:
            # A bytes field 1 holding invalid UTF-8 cannot be a StringValue.
            bad = wrappers_pb2.BytesValue(value=b"\xff")
            with pytest.raises(TTRPCError) as caught:
                await client.call(SERVICE, "Echo", bad, StringValue)
            assert caught.value.code == Code.INTERNAL
            assert caught.value.message.startswith("ttrpc: error unmarshalling payload: ")

    run(main())


def test_reply_over_4_mib_is_replaced_by_resource_exhausted(tmp_path: Path) -> None:
    async def huge(request: Any, ctx: CallContext) -> Any:
        return StringValue(value="x" * MAX_MESSAGE)

    async def main() -> None:
        async with serving(new_server(Huge=huge), tmp_path / "s") as client:
            with pytest.raises(TTRPCError) as caught:
                await call(client, "Huge")
            assert caught.value.code == Code.RESOURCE_EXHAUSTED
            assert "exceed maximum message size of 4194304" in caught.value.message
            # The connection stays up, unlike a Go v1.2.6+ server's.
            assert (await call(client, "Echo", "after")).value == "after"

    run(main())


def test_metadata_and_timeout_reach_the_call_context(tmp_path: Path) -> None:
    seen: list[tuple[CallContext, float]] = []

    async def look(request: Any, ctx: CallContext) -> Any:
        seen.append((ctx, asyncio.get_running_loop().time()))
        return StringValue()

    async def main() -> None:
        async with serving(new_server(Look=look), tmp_path / "s") as client:
            metadata = {"containerd-namespace-ttrpc": "default", "x-multi": ["a", "b"]}
            await call(client, "Look", timeout=30, metadata=metadata)
            await call(client, "Look")

    run(main())
    (ctx, now), (plain, _) = seen
    assert (ctx.service, ctx.method) == (SERVICE, "Look")
    assert ctx.namespace == "default"
    assert ctx.metadata["x-multi"] == ["a", "b"]
    assert ctx.deadline is not None and 29 < ctx.deadline - now <= 30
    assert plain.deadline is None and plain.namespace is None


def test_client_timeout_forgets_the_stream_and_drops_the_late_reply(tmp_path: Path) -> None:
    gate = asyncio.Event()

    async def stuck(request: Any, ctx: CallContext) -> Any:
        await gate.wait()
        return StringValue(value="late")

    async def main() -> None:
        async with serving(new_server(Stuck=stuck), tmp_path / "s") as client:
            with pytest.raises(TimeoutError):
                await call(client, "Stuck", timeout=0.05)
            gate.set()
            await asyncio.sleep(0.05)  # the late reply arrives and is dropped
            assert (await call(client, "Echo", "next")).value == "next"

    run(main())


def test_calls_fail_with_closed_error_when_the_server_goes_away(tmp_path: Path) -> None:
    started = asyncio.Event()

    async def forever(request: Any, ctx: CallContext) -> Any:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def main() -> None:
        server = new_server(Wait=forever)
        async with serving(server, tmp_path / "s") as client:
            pending = asyncio.create_task(call(client, "Wait"))
            await started.wait()
            server.close()
            with pytest.raises(ClientClosedError):
                await pending
            with pytest.raises(ConnectionError):
                await call(client, "Echo")
            assert client.closed

    run(main())


def test_client_close_fails_pending_and_later_calls(tmp_path: Path) -> None:
    async def forever(request: Any, ctx: CallContext) -> Any:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def main() -> None:
        async with serving(new_server(Wait=forever), tmp_path / "s") as client:
            pending = asyncio.create_task(call(client, "Wait"))
            await asyncio.sleep(0.05)
            client.close()
            with pytest.raises(ClientClosedError):
                await pending
            with pytest.raises(ClientClosedError):
                await call(client, "Echo")

    run(main())


def test_connection_end_cancels_its_calls_and_spares_other_connections(tmp_path: Path) -> None:
    cancelled = asyncio.Event()
    started = asyncio.Event()

    async def forever(request: Any, ctx: CallContext) -> Any:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        raise AssertionError("unreachable")

    async def main() -> None:
        closed_counts: list[int] = []
        server = Server(on_connection_closed=closed_counts.append)
        server.register(SERVICE, methods(Wait=forever))
        async with serving(server, tmp_path / "s") as survivor:
            doomed = await Client.connect(str(tmp_path / "s"))
            pending = asyncio.create_task(call(doomed, "Wait"))
            await started.wait()
            assert server.connection_count == 2
            doomed.close()
            await asyncio.wait_for(cancelled.wait(), 5)
            with pytest.raises(ClientClosedError):
                await pending
            assert (await call(survivor, "Echo", "fine")).value == "fine"
            assert closed_counts == [1]

    run(main())


def test_malformed_input_never_breaks_the_server(tmp_path: Path) -> None:
    async def main() -> None:
        path = tmp_path / "s"
        async with serving(new_server(), path) as client:
            _, writer = await asyncio.open_unix_connection(str(path))
            oversized = (MAX_MESSAGE + 1).to_bytes(4, "big") + (1).to_bytes(4, "big") + b"\x01\x00"
            writer.write(oversized + b"\x00" * 5000 + os.urandom(3000))
            await writer.drain()
            writer.close()
            assert (await call(client, "Echo", "alive")).value == "alive"

    run(main())


def test_protocol_errors_are_answered_on_the_wire(tmp_path: Path) -> None:
    async def main() -> None:
        path = tmp_path / "s"
        async with serving(new_server(), path):
            reader, writer = await asyncio.open_unix_connection(str(path))
            length = MAX_MESSAGE + 1
            writer.write(length.to_bytes(4, "big") + (1).to_bytes(4, "big") + b"\x01\x00")
            writer.write(bytes(length))
            writer.write(encode_frame(2, MessageType.REQUEST, b""))
            await writer.drain()
            protocol = ClientProtocol()
            replies = []
            while len(replies) < 2:
                replies += protocol.receive_data(await reader.read(65536))
            assert [(r.stream_id, r.status_code) for r in replies] == [
                (1, Code.RESOURCE_EXHAUSTED),
                (2, Code.INVALID_ARGUMENT),
            ]
            writer.close()

    run(main())


def test_shutdown_answers_calls_in_flight_then_closes(tmp_path: Path) -> None:
    gate = asyncio.Event()

    async def slow(request: Any, ctx: CallContext) -> Any:
        await gate.wait()
        return StringValue(value="done")

    async def main() -> None:
        path = tmp_path / "s"
        server = new_server(Slow=slow)
        serve_task = asyncio.create_task(server.serve(listen(path)))
        client = await Client.connect(str(path))
        pending = asyncio.create_task(call(client, "Slow"))
        await asyncio.sleep(0.05)
        shutdown = asyncio.create_task(server.shutdown())
        await asyncio.sleep(0.05)
        assert not shutdown.done()
        gate.set()
        assert (await pending).value == "done"
        await shutdown
        await serve_task
        assert server.connection_count == 0
        with pytest.raises(ClientClosedError):
            await call(client, "Echo")
        # serve() closed the listener: late clients are refused at once.
        with pytest.raises(OSError):
            await Client.connect(str(path))
        await client.wait_closed()

    run(main())


def test_peer_with_other_uid_is_refused_before_anything_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    called = False

    async def spy(request: Any, ctx: CallContext) -> Any:
        nonlocal called
        called = True
        return StringValue()

    async def main() -> None:
        async with serving(new_server(Spy=spy), tmp_path / "s") as client:
            with pytest.raises(ClientClosedError):
                await call(client, "Spy")
        assert not called

    # Pretend the server runs as another user than this test's client.
    monkeypatch.setattr(os, "geteuid", lambda: os.getuid() + 1)
    run(main())


def test_credentials_check_requires_both_uid_and_gid() -> None:
    assert credentials_allowed(PeerCredentials(pid=10, uid=0, gid=0), uid=0, gid=0)
    assert not credentials_allowed(PeerCredentials(pid=10, uid=1000, gid=0), uid=0, gid=0)
    assert not credentials_allowed(PeerCredentials(pid=10, uid=0, gid=1000), uid=0, gid=0)


def test_peer_credentials_of_a_socketpair_are_our_own() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with left, right:
        assert peer_credentials(left) == PeerCredentials(os.getpid(), os.geteuid(), os.getegid())


def test_credential_check_can_be_turned_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        server = Server(check_peer_credentials=False)
        server.register(SERVICE, methods())
        async with serving(server, tmp_path / "s") as client:
            assert (await call(client, "Echo", "in")).value == "in"

    monkeypatch.setattr(os, "geteuid", lambda: os.getuid() + 1)
    run(main())


def test_handler_returning_nothing_is_answered_not_crashed(tmp_path: Path) -> None:
    async def forgetful(request: Any, ctx: CallContext) -> Any:
        return None

    async def main() -> None:
        async with serving(new_server(Forgetful=forgetful), tmp_path / "s") as client:
            with pytest.raises(TTRPCError) as caught:
                await call(client, "Forgetful")
            assert (caught.value.code, caught.value.message) == (
                Code.UNKNOWN,
                "ttrpc: marshal called with nil",
            )

    run(main())
