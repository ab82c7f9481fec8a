"""Task events as containerd's subscribers (`ctr events`) see them."""

from __future__ import annotations

from tests.integration.conftest import IMAGE, both_runtimes, unique_id
from tests.support import Containerd
from tests.support.events import event_log


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

    with event_log(containerd) as events:
        publisher = Publisher(containerd.ttrpc_address, containerd.namespace)
        publisher.start()
        publisher.publish(events_pb2.TaskOOM(container_id=id))
        publisher.close(timeout=5)
        assert publisher.pending == 0
        events.wait_for(id, "/tasks/oom")
