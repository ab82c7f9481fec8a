"""ttrpc server and client over real unix sockets (pyrunc.shim.ttrpc.server, .client)."""

from __future__ import annotations

import errno
import functools
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import empty_pb2, wrappers_pb2

from pyrunc.shim import log
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
from pyrunc.shim.ttrpc.protocol import ClientProtocol, ResponseReceived
from pyrunc.shim.ttrpc.server import PeerCredentials, credentials_allowed, peer_credentials

StringValue = wrappers_pb2.StringValue
SERVICE = "test.v1.Echo"
WAIT = 10.0  # the longest any test waits for something that should happen at once
TTRPC_THREADS = ("ttrpc-accept", "ttrpc-conn", "ttrpc-client", "ttrpc-call")


def socket_fds() -> set[int]:
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                fds.add(int(name))
        except FileNotFoundError:
            pass  # the directory's own descriptor
    return fds


def ttrpc_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(TTRPC_THREADS)]


@pytest.fixture(autouse=True)
def nothing_left_behind() -> Iterator[None]:
    """Every test ends with no ttrpc thread running and no socket open that it did not find.

    Handler threads may outlive their connection (they cannot be killed); every test releases
    its handlers, so they are given a moment to return."""
    sockets = socket_fds()
    assert not ttrpc_threads()
    yield
    for thread in ttrpc_threads():
        assert thread.name.startswith("ttrpc-call"), f"{thread.name} left running"
        thread.join(WAIT)
    assert not ttrpc_threads()
    assert socket_fds() <= sockets


def echo(request: Any, ctx: CallContext) -> Any:
    return StringValue(value=request.value)


def methods(**handlers: Callable[[Any, CallContext], Any]) -> dict[str, Method]:
    table: dict[str, Method] = {"Echo": Method(StringValue, echo)}
    table.update({name: Method(StringValue, handler) for name, handler in handlers.items()})
    return table


def listen(path: Path) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    return listener


@contextmanager
def serving(server: Server, path: Path) -> Iterator[Client]:
    """Serve `server` on `path` and yield a connected client; tear everything down after."""
    accept = server.start(listen(path))
    client = Client.connect(f"unix://{path}", timeout=5)
    try:
        yield client
    finally:
        client.close()
        server.close()
        assert server.wait_closed(WAIT)
        # Nothing of the server's own is left once wait_closed() says so.
        assert not accept.is_alive()
        assert not [t for t in ttrpc_threads() if not t.name.startswith("ttrpc-call")]


class Background:
    """A function run in a thread of its own, with its outcome collected by result()."""

    def __init__(self, function: Callable[[], Any]) -> None:
        self._outcome: list[Any] = []
        self._thread = threading.Thread(target=self._run, args=(function,), daemon=True)
        self._thread.start()

    def _run(self, function: Callable[[], Any]) -> None:
        try:
            self._outcome.append((True, function()))
        except BaseException as exc:
            self._outcome.append((False, exc))

    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self, timeout: float = WAIT) -> Any:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "still running"
        ok, value = self._outcome[0]
        if not ok:
            raise value
        return value


def call(client: Client, method: str, value: str = "", **kwargs: Any) -> Any:
    return client.call(SERVICE, method, StringValue(value=value), StringValue, **kwargs)


def new_server(**handlers: Callable[[Any, CallContext], Any]) -> Server:
    server = Server()
    server.register(SERVICE, methods(**handlers))
    return server


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.005)


def test_unary_call_round_trip(tmp_path: Path) -> None:
    with serving(new_server(), tmp_path / "s") as client:
        assert call(client, "Echo", "hello") == StringValue(value="hello")


def test_one_method_table_served_under_two_service_names(tmp_path: Path) -> None:
    server = Server()
    table = methods()
    server.register("containerd.task.v2.Task", table)
    server.register("containerd.task.v3.Task", table)
    with serving(server, tmp_path / "s") as client:
        for service in ("containerd.task.v2.Task", "containerd.task.v3.Task"):
            assert client.call(service, "Echo", StringValue(value="x"), StringValue).value == "x"
    with pytest.raises(ValueError, match="duplicate service"):
        server.register("containerd.task.v3.Task", table)


def test_empty_reply_round_trip(tmp_path: Path) -> None:
    def nothing(request: Any, ctx: CallContext) -> Any:
        return empty_pb2.Empty()

    server = Server()
    server.register(SERVICE, {"Kill": Method(StringValue, nothing)})
    with serving(server, tmp_path / "s") as client:
        assert client.call(SERVICE, "Kill", StringValue(), empty_pb2.Empty) == empty_pb2.Empty()


def test_concurrent_calls_answered_in_completion_order(tmp_path: Path) -> None:
    # Wait stays blocked while containerd sends Kill on the same connection: a server that
    # serialized handlers would deadlock here, since only the fast call releases the slow one.
    # The slow one then stays blocked until the fast reply is back: it was not held behind it.
    released = threading.Event()
    fast_returned = threading.Event()
    finished: list[str] = []

    def slow(request: Any, ctx: CallContext) -> Any:
        assert released.wait(WAIT)
        assert fast_returned.wait(WAIT)
        return StringValue(value="slow")

    def fast(request: Any, ctx: CallContext) -> Any:
        released.set()
        return StringValue(value="fast")

    with serving(new_server(Slow=slow, Fast=fast), tmp_path / "s") as client:
        slow_call = Background(lambda: finished.append(call(client, "Slow").value))
        time.sleep(0.05)
        finished.append(call(client, "Fast").value)
        assert not slow_call.done()
        fast_returned.set()
        slow_call.result()
    assert finished == ["fast", "slow"]


def test_many_threads_share_one_client(tmp_path: Path) -> None:
    # Replies come back out of order (each handler sleeps a different time); the client's
    # reader must hand each to the thread whose stream it answers.
    def jittery(request: Any, ctx: CallContext) -> Any:
        time.sleep((hash(request.value) % 7) / 1000)
        return StringValue(value=request.value)

    with serving(new_server(Jittery=jittery), tmp_path / "s") as client:
        def twenty(n: int) -> list[str]:
            return [call(client, "Jittery", f"{n}-{i}").value for i in range(20)]

        calls = [Background(functools.partial(twenty, n)) for n in range(16)]
        for n, background in enumerate(calls):
            assert background.result() == [f"{n}-{i}" for i in range(20)]


def test_unknown_service_and_method_are_unimplemented(tmp_path: Path) -> None:
    with serving(new_server(), tmp_path / "s") as client:
        with pytest.raises(TTRPCError) as caught:
            client.call("no.such.Service", "Echo", StringValue(), StringValue)
        assert (caught.value.code, caught.value.message) == (
            Code.UNIMPLEMENTED,
            "service no.such.Service",
        )
        with pytest.raises(TTRPCError) as caught:
            call(client, "Nope")
        assert (caught.value.code, caught.value.message) == (Code.UNIMPLEMENTED, "method Nope")


def test_handler_error_reaches_the_client_with_its_code_and_message(tmp_path: Path) -> None:
    def missing(request: Any, ctx: CallContext) -> Any:
        raise not_found("container not created")

    with serving(new_server(State=missing), tmp_path / "s") as client:
        with pytest.raises(TTRPCError) as caught:
            call(client, "State")
        assert caught.value.code == Code.NOT_FOUND
        assert caught.value.message == "container not created: not found"


def test_plain_exception_becomes_unknown_and_is_logged(
    tmp_path: Path, logged: list[tuple[int, str, bool]]
) -> None:
    def broken(request: Any, ctx: CallContext) -> Any:
        raise RuntimeError("runc did something odd")

    with serving(new_server(Broken=broken), tmp_path / "s") as client:
        with pytest.raises(TTRPCError) as caught:
            call(client, "Broken")
        assert (caught.value.code, caught.value.message) == (
            Code.UNKNOWN,
            "runc did something odd",
        )
        assert call(client, "Echo", "still here").value == "still here"
    assert any(at == log.ERROR and with_traceback for at, _, with_traceback in logged)


def test_undecodable_payload_is_internal(tmp_path: Path) -> None:
    with serving(new_server(), tmp_path / "s") as client:
        # A bytes field 1 holding invalid UTF-8 cannot be a StringValue.
        bad = wrappers_pb2.BytesValue(value=b"\xff")
        with pytest.raises(TTRPCError) as caught:
            client.call(SERVICE, "Echo", bad, StringValue)
        assert caught.value.code == Code.INTERNAL
        assert caught.value.message.startswith("ttrpc: error unmarshalling payload: ")


def test_reply_over_4_mib_is_replaced_by_resource_exhausted(tmp_path: Path) -> None:
    def huge(request: Any, ctx: CallContext) -> Any:
        return StringValue(value="x" * MAX_MESSAGE)

    with serving(new_server(Huge=huge), tmp_path / "s") as client:
        with pytest.raises(TTRPCError) as caught:
            call(client, "Huge")
        assert caught.value.code == Code.RESOURCE_EXHAUSTED
        assert "exceed maximum message size of 4194304" in caught.value.message
        # The connection stays up, unlike a Go v1.2.6+ server's.
        assert call(client, "Echo", "after").value == "after"


def test_large_request_and_reply_are_written_whole(tmp_path: Path) -> None:
    # Far more than a socket buffer holds, both ways, with a timeout (the client's
    # non-blocking send path) and without (plain sendall).
    big = "y" * (3 << 20)
    with serving(new_server(), tmp_path / "s") as client:
        assert call(client, "Echo", big, timeout=WAIT).value == big
        assert call(client, "Echo", big).value == big


def test_send_that_outlasts_the_timeout_fails_and_closes_the_client(tmp_path: Path) -> None:
    # A server that accepts and never reads: a frame larger than the socket buffers cannot
    # leave, and the call's timeout covers sending too. Half a frame went out, so the
    # connection cannot carry another one.
    path = tmp_path / "deaf"
    with listen(path) as listener:
        client = Client.connect(str(path))
        accepted, _ = listener.accept()
        with accepted:
            try:
                begun = time.monotonic()
                with pytest.raises(TimeoutError):
                    call(client, "Echo", "z" * (3 << 20), timeout=0.2)
                assert 0.15 < time.monotonic() - begun < WAIT
                assert client.closed
                with pytest.raises(ClientClosedError):
                    call(client, "Echo")
            finally:
                client.close()


def test_close_wakes_a_reply_stuck_on_a_peer_that_does_not_read(tmp_path: Path) -> None:
    path = tmp_path / "s"
    server = new_server()
    server.start(listen(path))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
        raw.connect(str(path))
        payload = StringValue(value="r" * (3 << 20)).SerializeToString()
        _, frame = ClientProtocol().request(SERVICE, "Echo", payload)
        raw.sendall(frame)
        # The echo's 3 MiB reply fills the socket buffers: its thread is stuck in sendall().
        wait_until(lambda: any(t.name == "ttrpc-call Echo" for t in ttrpc_threads()))
        time.sleep(0.1)
        assert any(t.name == "ttrpc-call Echo" for t in ttrpc_threads())
        begun = time.monotonic()
        server.close()
        assert server.wait_closed(WAIT)
        assert time.monotonic() - begun < 1
        assert not ttrpc_threads()


def test_metadata_and_timeout_reach_the_call_context(tmp_path: Path) -> None:
    seen: list[tuple[CallContext, float]] = []

    def look(request: Any, ctx: CallContext) -> Any:
        seen.append((ctx, time.monotonic()))
        return StringValue()

    with serving(new_server(Look=look), tmp_path / "s") as client:
        metadata = {"containerd-namespace-ttrpc": "default", "x-multi": ["a", "b"]}
        call(client, "Look", timeout=30, metadata=metadata)
        call(client, "Look")
    (ctx, now), (plain, _) = seen
    assert (ctx.service, ctx.method) == (SERVICE, "Look")
    assert ctx.namespace == "default"
    assert ctx.metadata["x-multi"] == ["a", "b"]
    assert ctx.deadline is not None and 29 < ctx.deadline - now <= 30
    assert plain.deadline is None and plain.namespace is None


def test_client_timeout_forgets_the_stream_and_drops_the_late_reply(tmp_path: Path) -> None:
    gate = threading.Event()
    answered = threading.Event()

    def stuck(request: Any, ctx: CallContext) -> Any:
        assert gate.wait(WAIT)
        answered.set()
        return StringValue(value="late")

    with serving(new_server(Stuck=stuck), tmp_path / "s") as client:
        with pytest.raises(TimeoutError):
            call(client, "Stuck", timeout=0.05)
        gate.set()
        assert answered.wait(WAIT)
        time.sleep(0.05)  # the late reply arrives and is dropped
        assert call(client, "Echo", "next").value == "next"
        assert not client._pending


def test_calls_fail_with_closed_error_when_the_server_goes_away(tmp_path: Path) -> None:
    started = threading.Event()
    release = threading.Event()
    contexts: list[CallContext] = []

    def forever(request: Any, ctx: CallContext) -> Any:
        contexts.append(ctx)
        started.set()
        release.wait(WAIT)
        return StringValue(value="too late")

    server = new_server(Wait=forever)
    try:
        with serving(server, tmp_path / "s") as client:
            pending = Background(lambda: call(client, "Wait"))
            assert started.wait(WAIT)
            server.close()
            with pytest.raises(ClientClosedError):
                pending.result()
            with pytest.raises(ConnectionError):
                call(client, "Echo")
            assert client.closed
            # The handler was told that nobody waits for its answer any more.
            assert contexts[0].cancelled.is_set()
    finally:
        release.set()


def test_client_close_fails_pending_and_later_calls(tmp_path: Path) -> None:
    release = threading.Event()

    def forever(request: Any, ctx: CallContext) -> Any:
        release.wait(WAIT)
        return StringValue()

    try:
        with serving(new_server(Wait=forever), tmp_path / "s") as client:
            pending = Background(lambda: call(client, "Wait"))
            time.sleep(0.05)
            client.close()
            assert not [t for t in threading.enumerate() if t.name == "ttrpc-client"]
            with pytest.raises(ClientClosedError):
                pending.result()
            with pytest.raises(ClientClosedError):
                call(client, "Echo")
    finally:
        release.set()


def test_connection_end_cancels_its_calls_and_spares_other_connections(tmp_path: Path) -> None:
    cancelled = threading.Event()
    started = threading.Event()
    closed = threading.Event()
    closed_counts: list[int] = []

    def forever(request: Any, ctx: CallContext) -> Any:
        started.set()
        if ctx.cancelled.wait(WAIT):
            cancelled.set()
        return StringValue(value="nobody listens")  # dropped

    def connection_closed(remaining: int) -> None:
        closed_counts.append(remaining)
        closed.set()

    server = Server(on_connection_closed=connection_closed)
    server.register(SERVICE, methods(Wait=forever))
    with serving(server, tmp_path / "s") as survivor:
        doomed = Client.connect(str(tmp_path / "s"))
        pending = Background(lambda: call(doomed, "Wait"))
        assert started.wait(WAIT)
        assert server.connection_count == 2
        doomed.close()
        assert cancelled.wait(WAIT)
        with pytest.raises(ClientClosedError):
            pending.result()
        assert closed.wait(WAIT)
        assert call(survivor, "Echo", "fine").value == "fine"
        assert closed_counts == [1]
        assert server.connection_count == 1


def test_malformed_input_never_breaks_the_server(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with serving(new_server(), path) as client:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
            raw.connect(str(path))
            oversized = (MAX_MESSAGE + 1).to_bytes(4, "big") + (1).to_bytes(4, "big") + b"\x01\x00"
            raw.sendall(oversized + b"\x00" * 5000 + os.urandom(3000))
        assert call(client, "Echo", "alive").value == "alive"


def test_protocol_errors_are_answered_on_the_wire(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with serving(new_server(), path), \
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
        raw.connect(str(path))
        raw.settimeout(WAIT)
        length = MAX_MESSAGE + 1
        raw.sendall(length.to_bytes(4, "big") + (1).to_bytes(4, "big") + b"\x01\x00")
        raw.sendall(bytes(length))
        raw.sendall(encode_frame(2, MessageType.REQUEST, b""))
        protocol = ClientProtocol()
        replies: list[ResponseReceived] = []
        while len(replies) < 2:
            replies += protocol.receive_data(raw.recv(65536))
        assert [(r.stream_id, r.status_code) for r in replies] == [
            (1, Code.RESOURCE_EXHAUSTED),
            (2, Code.INVALID_ARGUMENT),
        ]


def test_shutdown_answers_calls_in_flight_then_closes(tmp_path: Path) -> None:
    gate = threading.Event()

    def slow(request: Any, ctx: CallContext) -> Any:
        assert gate.wait(WAIT)
        return StringValue(value="done")

    path = tmp_path / "s"
    server = new_server(Slow=slow)
    accept = server.start(listen(path))
    client = Client.connect(str(path))
    try:
        pending = Background(lambda: call(client, "Slow"))
        time.sleep(0.05)
        shutdown = Background(server.shutdown)
        time.sleep(0.05)
        assert not shutdown.done()
        gate.set()
        assert pending.result().value == "done"
        assert shutdown.result() is True
        assert not accept.is_alive()
        assert server.connection_count == 0
        assert not [t for t in ttrpc_threads() if t.name != "ttrpc-client"]
        with pytest.raises(ClientClosedError):
            call(client, "Echo")
        # serve() closed the listener: late clients are refused at once.
        with pytest.raises(OSError):
            Client.connect(str(path))
    finally:
        gate.set()
        client.close()
        server.close()


def test_shutdown_gives_up_after_its_timeout_and_close_drops_the_call(tmp_path: Path) -> None:
    release = threading.Event()
    returned = threading.Event()

    def stuck(request: Any, ctx: CallContext) -> Any:
        release.wait(WAIT)
        returned.set()
        return StringValue(value="never sent")

    path = tmp_path / "s"
    server = new_server(Stuck=stuck)
    server.start(listen(path))
    with Client.connect(str(path)) as client:
        try:
            pending = Background(lambda: call(client, "Stuck"))
            wait_until(lambda: bool([t for t in ttrpc_threads() if t.name == "ttrpc-call Stuck"]))
            begun = time.monotonic()
            assert server.shutdown(timeout=0.2) is False
            assert 0.15 < time.monotonic() - begun < WAIT
            server.close()
            assert server.wait_closed(WAIT)
            with pytest.raises(ClientClosedError):
                pending.result()
            # Only the handler, still in its own code, may outlive the server.
            server_side = [t.name for t in ttrpc_threads() if t.name != "ttrpc-client"]
            assert server_side == ["ttrpc-call Stuck"]
        finally:
            release.set()
        assert returned.wait(WAIT)


def test_close_wakes_an_idle_accept_at_once(tmp_path: Path) -> None:
    # serve() in the calling thread, blocked in accept() with nobody connecting.
    server = new_server()
    listener = listen(tmp_path / "s")
    serving_thread = Background(lambda: server.serve(listener))
    time.sleep(0.05)
    assert not serving_thread.done()
    begun = time.monotonic()
    server.close()
    assert serving_thread.result() is None
    assert time.monotonic() - begun < 1
    assert listener.fileno() == -1
    assert server.wait_closed(0)


def test_serve_after_close_closes_the_listener_at_once(tmp_path: Path) -> None:
    server = new_server()
    server.close()
    listener = listen(tmp_path / "s")
    server.serve(listener)
    assert listener.fileno() == -1
    accept = server.start(second := listen(tmp_path / "t"))
    assert not accept.is_alive() and second.fileno() == -1
    assert server.shutdown(0) is True


class FlakyListener:
    """A listener whose first accept() calls fail as a process out of descriptors sees."""

    def __init__(self, listener: socket.socket, failures: int) -> None:
        self._listener = listener
        self.failures = failures

    def accept(self) -> tuple[socket.socket, Any]:
        if self.failures:
            self.failures -= 1
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        return self._listener.accept()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._listener, name)


def test_accept_failures_back_off_and_serving_goes_on(
    tmp_path: Path, logged: list[tuple[int, str, bool]]
) -> None:
    def backoffs() -> list[str]:
        return [message.split("; ")[1].split(":")[0]
                for at, message, _ in logged if "failed accept" in message and at >= log.ERROR]

    server = new_server()
    flaky = FlakyListener(listen(tmp_path / "s"), failures=3)
    server.start(flaky)  # type: ignore[arg-type]
    with Client.connect(str(tmp_path / "s")) as client:
        assert call(client, "Echo", "through").value == "through"
    assert backoffs() == ["backoff 0.001s", "backoff 0.002s", "backoff 0.004s"]
    # Failing for good now (once the accept() under way returns): the pause doubles up
    # to a second, and close() cuts it short.
    flaky.failures = 1000
    Client.connect(str(tmp_path / "s")).close()
    wait_until(lambda: "backoff 1.000s" in backoffs())
    begun = time.monotonic()
    server.close()
    assert server.wait_closed(WAIT)
    assert time.monotonic() - begun < 0.5


def test_peer_with_other_uid_is_refused_before_anything_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    called = False

    def spy(request: Any, ctx: CallContext) -> Any:
        nonlocal called
        called = True
        return StringValue()

    # Pretend the server runs as another user than this test's client.
    monkeypatch.setattr(os, "geteuid", lambda: os.getuid() + 1)
    with serving(new_server(Spy=spy), tmp_path / "s") as client, \
            pytest.raises(ClientClosedError):
        call(client, "Spy")
    assert not called


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
    server = Server(check_peer_credentials=False)
    server.register(SERVICE, methods())
    monkeypatch.setattr(os, "geteuid", lambda: os.getuid() + 1)
    with serving(server, tmp_path / "s") as client:
        assert call(client, "Echo", "in").value == "in"


def test_handler_returning_nothing_is_answered_not_crashed(tmp_path: Path) -> None:
    def forgetful(request: Any, ctx: CallContext) -> Any:
        return None

    def confused(request: Any, ctx: CallContext) -> Any:
        return "not a message"

    with serving(new_server(Forgetful=forgetful, Confused=confused), tmp_path / "s") as client:
        with pytest.raises(TTRPCError) as caught:
            call(client, "Forgetful")
        assert (caught.value.code, caught.value.message) == (
            Code.UNKNOWN,
            "ttrpc: marshal called with nil",
        )
        with pytest.raises(TTRPCError) as caught:
            call(client, "Confused")
        assert (caught.value.code, caught.value.message) == (
            Code.INTERNAL,
            "ttrpc: error unsupported response type: str",
        )


def test_client_connect_refused_and_timed_out(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Client.connect(str(tmp_path / "nobody"), timeout=1)
    # A listener that never accepts, with its backlog full: connect waits, then times out.
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "full"))
    listener.listen(0)
    queued = []
    try:
        for _ in range(8):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            queued.append(sock)
            sock.setblocking(False)
            try:
                sock.connect(str(tmp_path / "full"))
            except BlockingIOError:
                break
        with pytest.raises(TimeoutError):
            Client.connect(str(tmp_path / "full"), timeout=0.1)
    finally:
        for sock in queued:
            sock.close()
        listener.close()
