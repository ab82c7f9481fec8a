"""Task events, forwarded to containerd over ttrpc (`Events.Forward` on TTRPC_ADDRESS).

Events leave in the order they were published: one sender works through one queue, and an event
that cannot be delivered is retried at the head of the queue (reconnecting, with a growing pause)
rather than set aside, so TaskExit can never overtake TaskStart. While containerd is away the
queue holds everything; nothing is dropped while the shim lives. Each Forward call has the Go
publisher's 5 s limit.
"""

from __future__ import annotations

import collections
import threading
import time

from google.protobuf.message import Message

from pyrunc.protos import empty_pb2, forward_pb2
from pyrunc.shim import log
from pyrunc.shim.errors import describe
from pyrunc.shim.ttrpc.client import Client
from pyrunc.shim.ttrpc.status import TTRPCError

EVENTS_SERVICE = "containerd.services.events.ttrpc.v1.Events"
CALL_TIMEOUT = 5.0
DIAL_TIMEOUT = 5.0
MAX_BACKOFF = 5.0

# topic of each event type, as containerd's runtime package names them
TOPICS = {
    "TaskCreate": "/tasks/create",
    "TaskStart": "/tasks/start",
    "TaskDelete": "/tasks/delete",
    "TaskExit": "/tasks/exit",
    "TaskOOM": "/tasks/oom",
    "TaskExecAdded": "/tasks/exec-added",
    "TaskExecStarted": "/tasks/exec-started",
    "TaskPaused": "/tasks/paused",
    "TaskResumed": "/tasks/resumed",
    "TaskCheckpointed": "/tasks/checkpointed",
}


def envelope(
    namespace: str, event: Message, timestamp_ns: int | None = None
) -> forward_pb2.Envelope:
    """Wrap an event with a bare type URL (`containerd.events.TaskExit`), as Go's typeurl does."""
    name = event.DESCRIPTOR.name
    env = forward_pb2.Envelope(namespace=namespace, topic=TOPICS[name])
    ns = time.time_ns() if timestamp_ns is None else timestamp_ns
    env.timestamp.seconds, env.timestamp.nanos = divmod(ns, 1_000_000_000)
    env.event.type_url = event.DESCRIPTOR.full_name
    env.event.value = event.SerializeToString()
    return env


class Publisher:
    """Forwards queued events to containerd from a thread of its own, in order."""

    def __init__(self, address: str, namespace: str) -> None:
        self.address = address.removeprefix("unix://")
        self.namespace = namespace
        # (envelope, the event's container id, for the log)
        self._queue: collections.deque[tuple[forward_pb2.Envelope, str]] = collections.deque()
        self._ready = threading.Condition()  # an event queued, or closing
        self._client: Client | None = None
        self._closing = False
        self._gone = threading.Event()  # set to cut a retry pause short when closing
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)
        self._thread.start()

    def publish(self, event: Message) -> None:
        """Queue an event; never blocks, never fails."""
        env = envelope(self.namespace, event)
        with self._ready:
            self._queue.append((env, getattr(event, "container_id", "")))
            self._ready.notify()

    @property
    def pending(self) -> int:
        return len(self._queue)

    def _run(self) -> None:
        backoff = 0.0
        failures = 0  # of the event at the head of the queue
        while True:
            with self._ready:
                while not self._queue:
                    if self._closing:
                        return
                    self._ready.wait()
                env, container = self._queue[0]
            try:
                self._forward(env)
            except (TimeoutError, OSError, ConnectionError, TTRPCError) as e:
                backoff = min(MAX_BACKOFF, backoff * 2 or 0.1)
                failures += 1
                log.warning("forward %s of %s (retry in %.1fs): %s", env.topic, container, backoff,
                            describe(e))
                self._drop_client()
                if self._gone.wait(backoff):
                    return
                continue
            if failures:  # the warnings said it was late; say that it arrived
                log.info("forward %s of %s delivered after %d failed attempts", env.topic,
                         container, failures)
            backoff, failures = 0.0, 0
            with self._ready:
                self._queue.popleft()

    def _forward(self, env: forward_pb2.Envelope) -> None:
        request = forward_pb2.ForwardRequest(envelope=env)
        for attempt in range(2):  # a closed connection is redialled once at once
            if self._client is None:
                self._client = Client.connect(self.address, timeout=DIAL_TIMEOUT)
            try:
                self._client.call(
                    EVENTS_SERVICE, "Forward", request, empty_pb2.Empty,
                    timeout=CALL_TIMEOUT,
                    metadata={"containerd-namespace-ttrpc": self.namespace},
                )
                return
            except ConnectionError:
                self._drop_client()
                if attempt:
                    raise

    def _drop_client(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            client.close()

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (for at most timeout seconds), then stop."""
        with self._ready:
            self._closing = True
            self._ready.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                # A daemon thread: it ends with the process, or at its next retry pause.
                log.warning("shutting down with %d undelivered events", len(self._queue))
                self._gone.set()
                return
        self._drop_client()
