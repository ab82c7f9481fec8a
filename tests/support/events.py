"""`ctr events` in the background: what containerd's event subscribers see, in order."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tests.support.containerd import Containerd


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
