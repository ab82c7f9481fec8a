"""Task events as containerd's subscribers (`ctr events`) see them."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tests.integration.conftest import IMAGE, both_runtimes, unique_id
from tests.support import Containerd


class EventLog:
    """`ctr events` running in the background; lines are (topic, event as a dict)."""

    def __init__(self, ctd: Containerd) -> None:
        self.proc = subprocess.Popen(
            ["ctr", "-a", ctd.address, "events"], stdout=subprocess.PIPE, text=True,
        )
        self.events: list[tuple[str, dict[str, object]]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            # "<date> <time> <zone> <zone> <namespace> <topic> <json>"
            parts = line.split(" ", 6)
            if len(parts) == 7 and parts[5].startswith("/"):
                try:
                    self.events.append((parts[5], json.loads(parts[6])))
                except ValueError:
                    self.events.append((parts[5], {}))

    def topics_for(self, container_id: str) -> list[str]:
        return [t for t, e in self.events if e.get("container_id") == container_id]

    def wait_for(self, container_id: str, topic: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while topic not in self.topics_for(container_id):
            assert time.monotonic() < deadline, (topic, self.topics_for(container_id))
            time.sleep(0.02)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


@contextmanager
def event_log(ctd: Containerd) -> Iterator[EventLog]:
    log = EventLog(ctd)
    time.sleep(0.2)  # let ctr subscribe before anything happens
    try:
        yield log
    finally:
        log.close()


@both_runtimes
def test_task_events_arrive_in_lifecycle_order(containerd: Containerd, runtime: str) -> None:
    id = unique_id("events")
    with event_log(containerd) as events:
        result = containerd.ctr("run", "--rm", "--runtime", runtime, IMAGE, id, "true")
        assert result.returncode == 0
        events.wait_for(id, "/tasks/delete")
        task_topics = [t for t in events.topics_for(id) if t.startswith("/tasks/")]
    assert task_topics == ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"]


@both_runtimes
def test_exit_event_carries_status_and_pid(containerd: Containerd, runtime: str) -> None:
    id = unique_id("exitev")
    with event_log(containerd) as events:
        containerd.ctr("run", "--rm", "--runtime", runtime, IMAGE, id, "sh", "-c", "exit 7",
                       check=False)
        events.wait_for(id, "/tasks/exit")
        exit = next(e for t, e in events.events if t == "/tasks/exit" and e["container_id"] == id)
        create = next(e for t, e in events.events
                      if t == "/tasks/create" and e["container_id"] == id)
    assert exit["exit_status"] == 7
    assert exit["id"] == id
    assert exit["pid"] == create["pid"]


def test_forward_from_the_ttrpc_client_reaches_containerd(containerd: Containerd) -> None:
    """Interop of pyrunc's ttrpc client with a real ttrpc server: containerd's own."""
    from pyrunc.protos import events_pb2
    from pyrunc.shim.publisher import Publisher

    id = unique_id("forward")

    async def forward() -> None:
        publisher = Publisher(containerd.ttrpc_address, containerd.namespace)
        publisher.start()
        publisher.publish(events_pb2.TaskOOM(container_id=id))
        await publisher.close(timeout=5)
        assert publisher.pending == 0

    with event_log(containerd) as events:
        asyncio.run(forward())
        events.wait_for(id, "/tasks/oom")
