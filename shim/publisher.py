"""Task events, forwarded to containerd over ttrpc (`Events.Forward` on TTRPC_ADDRESS).

Events leave in the order they were published: one sender works through one queue, and an event
that cannot be delivered is retried at the head of the queue (reconnecting, with a growing pause)
rather than set aside, so TaskExit can never overtake TaskStart. While containerd is away the
queue holds everything; nothing is dropped while the shim lives. Each Forward call has the Go
publisher's 5 s limit.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time

from google.protobuf import empty_pb2
from google.protobuf.message import Message

from pyrunc.oci.errors import describe
from pyrunc.protos import forward_pb2
from pyrunc.shim.ttrpc.client import Client
from pyrunc.shim.ttrpc.status import TTRPCError

log = logging.getLogger("pyrunc.events")

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
    def __init__(self, address: str, namespace: str) -> None:
        self.address = address.removeprefix("unix://")
        self.namespace = namespace
        self._queue: collections.deque[forward_pb2.Envelope] = collections.deque()
        self._wakeup = asyncio.Event()
        self._client: Client | None = None
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def publish(self, event: Message) -> None:
        """Queue an event; never blocks, never fails."""
        self._queue.append(envelope(self.namespace, event))
        self._wakeup.set()

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def _run(self) -> None:
        backoff = 0.0
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            env = self._queue[0]
            try:
                await self._forward(env)
            except (TimeoutError, OSError, ConnectionError, TTRPCError) as e:
                backoff = min(MAX_BACKOFF, backoff * 2 or 0.1)
                log.warning("forward %s (retry in %.1fs): %s", env.topic, backoff, describe(e))
                await self._drop_client()
                await asyncio.sleep(backoff)
                continue
            backoff = 0.0
            self._queue.popleft()

    async def _forward(self, env: forward_pb2.Envelope) -> None:
        request = forward_pb2.ForwardRequest(envelope=env)
        for attempt in range(2):  # a closed connection is redialled once at once
            if self._client is None:
                self._client = await Client.connect(self.address, timeout=DIAL_TIMEOUT)
            try:
                await self._client.call(
                    EVENTS_SERVICE, "Forward", request, empty_pb2.Empty,
                    timeout=CALL_TIMEOUT,
                    metadata={"containerd-namespace-ttrpc": self.namespace},
                )
                return
            except ConnectionError:
                await self._drop_client()
                if attempt:
                    raise

    async def _drop_client(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            client.close()
            await client.wait_closed()

    async def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (for at most timeout seconds), then stop."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout)
            except TimeoutError:
                log.warning("shutting down with %d undelivered events", len(self._queue))
        await self._drop_client()
