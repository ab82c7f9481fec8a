"""The Task service: containerd's RPCs turned into operations on containers, plus their events.

One service serves every container of the shim (a pod's containers share one shim), keyed by
container id. Ordering rules, as containerd's runtime README requires: TaskCreate before
TaskStart before TaskExit before TaskDelete. A container's `lifecycle` lock is held from `runc
start` until TaskStart is queued, and the exit handler takes the same lock before it records the
exit and queues TaskExit; so an init that dies at once still has its exit published after its
start, and Wait returns only once TaskExit is queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

from google.protobuf import empty_pb2
from google.protobuf.message import DecodeError, Message

from pyrunc.oci import bundle as bundles
from pyrunc.oci.container import Container, ContainerError, CreateConfig
from pyrunc.oci.monitor import ProcessMonitor
from pyrunc.oci.mount import Mount
from pyrunc.oci.process import Process, State, StateError
from pyrunc.oci.stdio import Stdio
from pyrunc.protos import events_pb2, runc_options_pb2, runctypes_pb2, shim_pb2, task_types_pb2
from pyrunc.shim.publisher import Publisher
from pyrunc.shim.ttrpc import status
from pyrunc.shim.ttrpc.server import CallContext, Method

log = logging.getLogger("pyrunc.task")

TASK_SERVICES = ("containerd.task.v2.Task", "containerd.task.v3.Task")

_STATUS = {
    State.CREATED: task_types_pb2.CREATED,
    State.RUNNING: task_types_pb2.RUNNING,
    State.PAUSED: task_types_pb2.PAUSED,
    State.STOPPED: task_types_pb2.STOPPED,
    State.DELETED: task_types_pb2.STOPPED,
}


def _set_ts(field: Any, ns: int) -> None:
    field.seconds, field.nanos = divmod(ns, 1_000_000_000)


def runtime_options(any_options: Any) -> bundles.RuntimeOptions:
    """The runc options of a CreateTaskRequest: containerd.runc.v1.Options, or the legacy
    containerd.linux.runc ones that Go clients send for runtimes not named io.containerd.runc."""
    if not any_options.type_url:
        return bundles.RuntimeOptions()
    name = any_options.type_url.rsplit("/", 1)[-1]
    try:
        if name == "containerd.runc.v1.Options":
            o = runc_options_pb2.Options.FromString(any_options.value)
            return bundles.RuntimeOptions(
                no_pivot_root=o.no_pivot_root, no_new_keyring=o.no_new_keyring,
                shim_cgroup=o.shim_cgroup, io_uid=o.io_uid, io_gid=o.io_gid,
                binary_name=o.binary_name, root=o.root, criu_path=o.criu_path,
                systemd_cgroup=o.systemd_cgroup, criu_image_path=o.criu_image_path,
                criu_work_path=o.criu_work_path,
            )
        if name == "containerd.linux.runc.CreateOptions":
            c = runctypes_pb2.CreateOptions.FromString(any_options.value)
            return bundles.RuntimeOptions(
                no_pivot_root=c.no_pivot_root, no_new_keyring=c.no_new_keyring,
                shim_cgroup=c.shim_cgroup, io_uid=c.io_uid, io_gid=c.io_gid,
            )
        if name == "containerd.linux.runc.RuncOptions":
            r = runctypes_pb2.RuncOptions.FromString(any_options.value)
            return bundles.RuntimeOptions(
                binary_name=r.runtime, root=r.runtime_root, criu_path=r.criu_path,
                systemd_cgroup=r.systemd_cgroup,
            )
    except DecodeError as e:
        raise status.invalid_argument(f"cannot decode runtime options {name}: {e}") from e
    if name == "runtimeoptions.v1.Options":
        # What CRI sends to runtimes not named io.containerd.runc.*: a pointer to a config file
        # of the runtime's own. pyrunc has none; runc's defaults apply.
        return bundles.RuntimeOptions()
    raise status.invalid_argument(f"unsupported runtime options type {any_options.type_url!r}")


class TaskService:
    def __init__(
        self,
        namespace: str,
        publisher: Publisher,
        monitor: ProcessMonitor,
        on_shutdown: Callable[[], None],
    ) -> None:
        self.namespace = namespace
        self.publisher = publisher
        self.monitor = monitor
        self.on_shutdown = on_shutdown
        self.containers: dict[str, Container] = {}
        self._exit_watchers: set[asyncio.Task[None]] = set()

    def methods(self) -> dict[str, Method]:
        """Every RPC of the Task service, with its request type from the service descriptor."""
        service = shim_pb2.DESCRIPTOR.services_by_name["Task"]
        return {
            m.name: Method(getattr(shim_pb2, m.input_type.name), getattr(self, m.name))
            for m in service.methods
        }

    # --- helpers -------------------------------------------------------------------------

    def _container(self, id: str) -> Container:
        container = self.containers.get(id)
        if container is None:
            raise status.not_found(f"container {id}: container not created")
        return container

    def _process(self, container: Container, exec_id: str) -> Process:
        if exec_id:
            raise status.not_found(f"container {container.id}: process does not exist {exec_id}")
        return container.init

    @contextlib.contextmanager
    def _errors(self, id: str, what: str) -> Iterator[None]:
        """Map what the OCI side raises to the gRPC codes containerd expects."""
        try:
            yield
        except StateError as e:
            raise status.failed_precondition(f"container {id}: {e}") from e
        except ContainerError as e:
            message = f"container {id}: {e}"
            if e.kind == "not_found":
                raise status.not_found(message) from e
            if e.kind == "invalid":
                raise status.invalid_argument(message) from e
            raise status.TTRPCError(status.Code.UNKNOWN, message) from e
        except bundles.InvalidID as e:
            raise status.invalid_argument(str(e)) from e
        except OSError as e:
            raise status.TTRPCError(status.Code.UNKNOWN, f"container {id}: {what}: {e}") from e

    def _unimplemented(self, rpc: str, id: str) -> NoReturn:
        raise status.unimplemented(f"container {id}: {rpc} is not implemented by pyrunc yet")

    # --- lifecycle -----------------------------------------------------------------------

    async def Create(self, req: Any, ctx: CallContext) -> Message:
        with self._errors(req.id, "create"):
            bundles.validate_id("container", req.id)
        if req.id in self.containers:
            raise status.already_exists(f"container {req.id}: already exists in this shim")
        if req.checkpoint:
            self._unimplemented("restore from checkpoint", req.id)
        config = CreateConfig(
            id=req.id,
            bundle=req.bundle,
            namespace=ctx.namespace or self.namespace,
            rootfs=[Mount(m.type, m.source, tuple(m.options)) for m in req.rootfs],
            stdio=Stdio(req.stdin, req.stdout, req.stderr, req.terminal),
            options=runtime_options(req.options),
        )
        with self._errors(req.id, "create"):
            container = Container(config, self.monitor)
        self.containers[req.id] = container  # reserved: a concurrent Create of it is refused
        try:
            with self._errors(req.id, "create"):
                async with container.lifecycle:
                    await container.create()
                    event = events_pb2.TaskCreate(
                        container_id=req.id, bundle=req.bundle, checkpoint=req.checkpoint,
                        pid=container.pid,
                        io=events_pb2.TaskIO(
                            stdin=req.stdin, stdout=req.stdout, stderr=req.stderr,
                            terminal=req.terminal,
                        ),
                    )
                    event.rootfs.extend(req.rootfs)
                    self.publisher.publish(event)
        except BaseException:
            del self.containers[req.id]
            raise
        self._watch_init(container)
        log.info("container %s: created, pid %d", req.id, container.pid)
        return shim_pb2.CreateTaskResponse(pid=container.pid)

    def _watch_init(self, container: Container) -> None:
        task = asyncio.get_running_loop().create_task(self._handle_init_exit(container))
        self._exit_watchers.add(task)
        task.add_done_callback(self._exit_watchers.discard)

    async def _handle_init_exit(self, container: Container) -> None:
        assert container.init_exit is not None
        exit = await container.init_exit
        async with container.lifecycle:
            await container.kill_remaining()
            init = container.init
            deleted = init.state is State.DELETED
            init.set_exited(exit.status, exit.timestamp_ns)
            # Queued in the same step as the exit is recorded: a Wait that returns has its
            # TaskExit ahead of anything its caller does next (Delete, and so TaskDelete).
            if not deleted:
                event = events_pb2.TaskExit(
                    container_id=container.id, id=container.id, pid=exit.pid,
                    exit_status=exit.status,
                )
                _set_ts(event.exited_at, init.exited_at_ns)
                self.publisher.publish(event)
        log.info("container %s: init %d exited with %d", container.id, exit.pid, exit.status)

    async def Start(self, req: Any, ctx: CallContext) -> Message:
        container = self._container(req.id)
        if req.exec_id:
            self._unimplemented("exec", req.id)
        with self._errors(req.id, "start"):
            async with container.lifecycle:
                pid = await container.start()
                self.publisher.publish(events_pb2.TaskStart(container_id=req.id, pid=pid))
        return shim_pb2.StartResponse(pid=pid)

    async def Delete(self, req: Any, ctx: CallContext) -> Message:
        container = self._container(req.id)
        process = self._process(container, req.exec_id)
        with self._errors(req.id, "delete"):
            await container.delete()
        del self.containers[req.id]
        response = shim_pb2.DeleteResponse(pid=process.pid, exit_status=process.exit_status)
        _set_ts(response.exited_at, process.exited_at_ns)
        event = events_pb2.TaskDelete(
            container_id=req.id, pid=process.pid, exit_status=process.exit_status,
        )
        event.exited_at.CopyFrom(response.exited_at)
        self.publisher.publish(event)
        log.info("container %s: deleted", req.id)
        return response

    async def Kill(self, req: Any, ctx: CallContext) -> Message:
        container = self._container(req.id)
        self._process(container, req.exec_id)
        with self._errors(req.id, "kill"):
            await container.kill(req.signal, req.all)
        return empty_pb2.Empty()

    async def Wait(self, req: Any, ctx: CallContext) -> Message:
        container = self._container(req.id)
        process = self._process(container, req.exec_id)
        await process.wait()
        response = shim_pb2.WaitResponse(exit_status=process.exit_status)
        _set_ts(response.exited_at, process.exited_at_ns)
        return response

    async def State(self, req: Any, ctx: CallContext) -> Message:
        container = self._container(req.id)
        process = self._process(container, req.exec_id)
        response = shim_pb2.StateResponse(
            id=process.id, bundle=container.bundle, pid=process.pid,
            status=_STATUS[process.state],
            stdin=process.stdio.stdin, stdout=process.stdio.stdout, stderr=process.stdio.stderr,
            terminal=process.stdio.terminal, exit_status=process.exit_status,
            exec_id=req.exec_id,
        )
        _set_ts(response.exited_at, process.exited_at_ns)
        return response

    async def Pids(self, req: Any, ctx: CallContext) -> Message:
        container = self._container(req.id)
        with self._errors(req.id, "pids"):
            pids = await container.pids()
        return shim_pb2.PidsResponse(
            processes=[task_types_pb2.ProcessInfo(pid=pid) for pid in pids]
        )

    async def CloseIO(self, req: Any, ctx: CallContext) -> Message:
        container = self._container(req.id)
        self._process(container, req.exec_id)
        log.debug("container %s: CloseIO stdin=%s", req.id, req.stdin)
        if req.stdin:
            with self._errors(req.id, "close stdin"):
                container.close_stdin()
        return empty_pb2.Empty()

    async def Connect(self, req: Any, ctx: CallContext) -> Message:
        container = self.containers.get(req.id)
        return shim_pb2.ConnectResponse(
            shim_pid=os.getpid(), task_pid=container.pid if container else 0
        )

    async def Shutdown(self, req: Any, ctx: CallContext) -> Message:
        if not self.containers:
            # After the reply is on its way: containerd tolerates either order, but a reply
            # is kinder to its logs.
            asyncio.get_running_loop().call_soon(self.on_shutdown)
        return empty_pb2.Empty()

    # --- not yet (issue: the whole Task API) ---------------------------------------------

    async def Pause(self, req: Any, ctx: CallContext) -> Message:
        self._unimplemented("Pause", req.id)

    async def Resume(self, req: Any, ctx: CallContext) -> Message:
        self._unimplemented("Resume", req.id)

    async def Checkpoint(self, req: Any, ctx: CallContext) -> Message:
        self._unimplemented("Checkpoint", req.id)

    async def Exec(self, req: Any, ctx: CallContext) -> Message:
        self._unimplemented("Exec", req.id)

    async def ResizePty(self, req: Any, ctx: CallContext) -> Message:
        self._unimplemented("ResizePty", req.id)

    async def Update(self, req: Any, ctx: CallContext) -> Message:
        self._unimplemented("Update", req.id)

    async def Stats(self, req: Any, ctx: CallContext) -> Message:
        self._unimplemented("Stats", req.id)
