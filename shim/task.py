"""The Task service: containerd's RPCs turned into operations on containers, plus their events.

One service serves every container of the shim (a pod's containers share one shim), keyed by
container id. Event order, as containerd's runtime README requires it and beyond:

- TaskCreate before TaskStart before TaskExit before TaskDelete; TaskExecAdded before
  TaskExecStarted before the exec's TaskExit. Each process's `lifecycle` lock is held from its
  `runc start`/`runc exec` until its start event is queued, and its exit handler takes the same
  lock before it records the exit and queues TaskExit: a process that dies at once still has its
  exit published after its start.
- The TaskExit of every exec comes before the init's TaskExit: the init's exit handler waits until
  no exec is starting or running (they die with the init: the kernel kills them in a pid namespace
  of its own, the shim otherwise). Once the init's exit is seen, new execs are refused.
- Wait returns once the exit is recorded, and TaskExit is queued in that same step.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

from google.protobuf.message import DecodeError, Message

from pyrunc.oci import bundle as bundles
from pyrunc.oci import log as oci_log
from pyrunc.oci.cgroups import Cgroup, CgroupError, OOMWatcher, cgroup_for_pid
from pyrunc.oci.container import Container, ContainerError, CreateConfig, ExecProcess
from pyrunc.oci.monitor import ProcessMonitor
from pyrunc.oci.options import CheckpointOpts, RuntimeOptions
from pyrunc.oci.process import Process, State, StateError
from pyrunc.oci.stdio import Stdio
from pyrunc.protos import (
    any_pb2,
    empty_pb2,
    events_pb2,
    runc_options_pb2,
    runctypes_pb2,
    runtimeoptions_pb2,
    shim_pb2,
    task_types_pb2,
)
from pyrunc.shim import log, mount
from pyrunc.shim.errors import describe, quote
from pyrunc.shim.publisher import Publisher
from pyrunc.shim.ttrpc import status
from pyrunc.shim.ttrpc.server import CallContext, Method

TASK_SERVICES = ("containerd.task.v2.Task", "containerd.task.v3.Task")

oci_log.use(log.emit)  # what oci/ logs goes into the shim's log, at the shim's level

_STATUS = {
    State.CREATED: task_types_pb2.CREATED,
    State.RUNNING: task_types_pb2.RUNNING,
    State.PAUSED: task_types_pb2.PAUSED,
    State.STOPPED: task_types_pb2.STOPPED,
    State.DELETED: task_types_pb2.STOPPED,
}

# The keys of a runtime config file (CRI's ConfigPath), named as in containerd's config.toml.
_CONFIG_KEYS = {
    "NoPivotRoot": "no_pivot_root", "NoNewKeyring": "no_new_keyring",
    "ShimCgroup": "shim_cgroup", "IoUid": "io_uid", "IoGid": "io_gid",
    "BinaryName": "binary_name", "Root": "root", "CriuPath": "criu_path",
    "SystemdCgroup": "systemd_cgroup", "CriuImagePath": "criu_image_path",
    "CriuWorkPath": "criu_work_path",
}


def _set_ts(field: Any, ns: int) -> None:
    field.seconds, field.nanos = divmod(ns, 1_000_000_000)


def _type_name(value: Any) -> str:
    return str(value.type_url).rsplit("/", 1)[-1]


def runtime_options(any_options: Any) -> RuntimeOptions:
    """The runc options of a CreateTaskRequest (or of `start`'s stdin).

    containerd.runc.v1.Options is what runc-named runtimes get; Go clients send the legacy
    containerd.linux.runc ones to other runtime names; CRI (and `ctr --runtime-config-path`)
    sends runtimeoptions.v1.Options, whose config file pyrunc reads as TOML with the same keys
    as containerd's runc options (BinaryName, Root, SystemdCgroup, ...).
    """
    if not any_options.type_url:
        return RuntimeOptions()
    name = _type_name(any_options)
    try:
        if name == "containerd.runc.v1.Options":
            o = runc_options_pb2.Options.FromString(any_options.value)
            return RuntimeOptions(
                no_pivot_root=o.no_pivot_root, no_new_keyring=o.no_new_keyring,
                shim_cgroup=o.shim_cgroup, io_uid=o.io_uid, io_gid=o.io_gid,
                binary_name=o.binary_name, root=o.root, criu_path=o.criu_path,
                systemd_cgroup=o.systemd_cgroup, criu_image_path=o.criu_image_path,
                criu_work_path=o.criu_work_path,
            )
        if name == "containerd.linux.runc.CreateOptions":
            c = runctypes_pb2.CreateOptions.FromString(any_options.value)
            return RuntimeOptions(
                no_pivot_root=c.no_pivot_root, no_new_keyring=c.no_new_keyring,
                shim_cgroup=c.shim_cgroup, io_uid=c.io_uid, io_gid=c.io_gid,
            )
        if name == "containerd.linux.runc.RuncOptions":
            r = runctypes_pb2.RuncOptions.FromString(any_options.value)
            return RuntimeOptions(
                binary_name=r.runtime, root=r.runtime_root, criu_path=r.criu_path,
                systemd_cgroup=r.systemd_cgroup,
            )
        if name == "runtimeoptions.v1.Options":
            return _config_file_options(any_options.value)
    except DecodeError as e:
        raise status.invalid_argument(f"cannot decode runtime options {name}: {e}") from e
    raise status.invalid_argument(
        f"unsupported runtime options type {quote(any_options.type_url)}")


def with_defaults(options: RuntimeOptions, defaults: RuntimeOptions) -> RuntimeOptions:
    """containerd's options, field by field, with the host configuration's [runc] defaults where
    containerd left a field at its zero value (proto3 cannot tell unset from zero)."""
    if defaults == RuntimeOptions():
        return options
    return RuntimeOptions(**{name: getattr(options, name) or getattr(defaults, name)
                             for name in RuntimeOptions._fields})


def _config_file_options(value: bytes) -> RuntimeOptions:
    """The runc options in a runtime config file: TOML with containerd's key names."""
    options = runtimeoptions_pb2.Options.FromString(value)
    body, path = options.config_body, options.config_path
    if not body and path:
        try:
            with open(path, "rb") as f:
                body = f.read()
        except OSError as e:
            raise status.invalid_argument(f"runtime config: {describe(e, 'open')}") from e
    if not body:
        return RuntimeOptions()
    import tomllib  # here: few containers come with a runtime config file

    try:
        config = tomllib.loads(body.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise status.invalid_argument(f"runtime config {path or '(body)'}: {e}") from e
    unknown = sorted(set(config) - set(_CONFIG_KEYS))
    if unknown:
        raise status.invalid_argument(
            f"runtime config {path or '(body)'}: unknown keys {', '.join(unknown)}"
        )
    try:
        return RuntimeOptions(**{_CONFIG_KEYS[k]: v for k, v in config.items()})
    except TypeError as e:
        raise status.invalid_argument(f"runtime config {path or '(body)'}: {e}") from e


def checkpoint_options(path: str, any_options: Any, defaults: RuntimeOptions
                       ) -> CheckpointOpts:
    """CheckpointTaskRequest's options: containerd.runc.v1.CheckpointOptions, or the legacy
    containerd.linux.runc one (whose image_path and work_path numbers are swapped)."""
    image, work = path, defaults.criu_work_path
    flags: dict[str, Any] = {}
    if any_options.type_url:
        name = _type_name(any_options)
        if name == "containerd.runc.v1.CheckpointOptions":
            o: Any = runc_options_pb2.CheckpointOptions.FromString(any_options.value)
        elif name == "containerd.linux.runc.CheckpointOptions":
            o = runctypes_pb2.CheckpointOptions.FromString(any_options.value)
        else:
            raise status.invalid_argument(f"unsupported checkpoint options type {quote(name)}")
        image = image or o.image_path
        work = o.work_path or work
        flags = dict(
            exit=o.exit, open_tcp=o.open_tcp, external_unix_sockets=o.external_unix_sockets,
            terminal=o.terminal, file_locks=o.file_locks,
            empty_namespaces=tuple(o.empty_namespaces), cgroups_mode=o.cgroups_mode,
        )
    image = image or defaults.criu_image_path
    if not image:
        raise status.invalid_argument("checkpoint needs an image path")
    return CheckpointOpts(image_path=image, work_path=work, **flags)


def _logged(rpc: str, handler: Any) -> Any:
    """The handler, with every error it answers also written to the shim's log (which
    containerd copies into its own), in the same words containerd receives."""

    def call(request: Any, ctx: CallContext) -> Message:
        try:
            response: Message = handler(request, ctx)
            return response
        except status.TTRPCError as e:
            level = log.INFO if e.code == status.Code.NOT_FOUND else log.WARNING
            log.log(level, "%s: %s (%s)", rpc, e.message, status.code_name(e.code))
            raise

    return call


class TaskService:
    def __init__(
        self,
        namespace: str,
        publisher: Publisher,
        monitor: ProcessMonitor,
        on_shutdown: Callable[[], None],
        default_options: RuntimeOptions | None = None,
    ) -> None:
        self.namespace = namespace
        self.publisher = publisher
        self.monitor = monitor
        self.on_shutdown = on_shutdown
        self.default_options = default_options or RuntimeOptions()
        self.containers: dict[str, Container] = {}
        self.cgroups: dict[str, Cgroup] = {}
        self._oom = OOMWatcher()  # its thread starts with the first watch

    def methods(self) -> dict[str, Method]:
        """Every RPC of the Task service, with its request type from the service descriptor."""
        service = shim_pb2.DESCRIPTOR.services_by_name["Task"]
        return {
            m.name: Method(getattr(shim_pb2, m.input_type.name),
                           _logged(m.name, getattr(self, m.name)))
            for m in service.methods
        }

    # --- helpers -------------------------------------------------------------------------

    def _container(self, id: str) -> Container:
        container = self.containers.get(id)
        if container is None:
            raise status.not_found(f"container {id}: container not created")
        return container

    def _process(self, container: Container, exec_id: str) -> Process:
        with self._errors(container.id):
            return container.process(exec_id)

    def _exec(self, container: Container, exec_id: str) -> ExecProcess:
        process = self._process(container, exec_id)
        assert isinstance(process, ExecProcess)
        return process

    @contextlib.contextmanager
    def _errors(self, id: str, exec_id: str = "") -> Iterator[None]:
        """Map what the OCI side raises to the gRPC codes containerd expects."""
        who = f"container {id}" + (f" exec {exec_id}" if exec_id else "")
        try:
            yield
        except StateError as e:
            raise status.failed_precondition(f"{who}: {e}") from e
        except ContainerError as e:
            message = f"{who}: {e}"
            raise {
                "not_found": status.not_found,
                "invalid": status.invalid_argument,
                "exists": status.already_exists,
                "precondition": status.failed_precondition,
            }.get(e.kind, status.unknown)(message) from e
        except bundles.InvalidID as e:
            raise status.invalid_argument(f"{who}: {e}") from e
        except OSError as e:
            raise status.unknown(f"{who}: {describe(e)}") from e

    def _watch(self, name: str, target: Callable[..., None], *args: Any) -> None:
        """Run target(*args) in a thread of its own: it waits for a process's exit."""
        threading.Thread(target=target, args=args, name=name, daemon=True).start()

    def _publish_exit(self, container: Container, process: Process, pid: int, status_: int
                      ) -> None:
        event = events_pb2.TaskExit(
            container_id=container.id, id=process.exec_id or container.id, pid=pid,
            exit_status=status_,
        )
        _set_ts(event.exited_at, process.exited_at_ns)
        self.publisher.publish(event)

    # --- lifecycle -----------------------------------------------------------------------

    def Create(self, req: Any, ctx: CallContext) -> Message:
        with self._errors(req.id):
            bundles.validate_id("container", req.id)
        if req.id in self.containers:
            raise status.already_exists(f"container {req.id}: already exists in this shim")
        options = (with_defaults(runtime_options(req.options), self.default_options)
                   if req.options.type_url else self.default_options)
        config = CreateConfig(
            id=req.id,
            bundle=req.bundle,
            namespace=ctx.namespace or self.namespace,
            rootfs=mount.from_protos(req.rootfs),
            stdio=Stdio(req.stdin, req.stdout, req.stderr, req.terminal),
            options=options,
            checkpoint=req.checkpoint,
            parent_checkpoint=req.parent_checkpoint,
        )
        with self._errors(req.id):
            container = Container(config, self.monitor, mount)
        # Reserved in one atomic step: a concurrent Create of the same id is refused.
        if self.containers.setdefault(req.id, container) is not container:
            raise status.already_exists(f"container {req.id}: already exists in this shim")
        try:
            with self._errors(req.id), container.init.lifecycle:
                container.create()
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
        if container.init_exit is not None:
            self._watch_cgroup(container)
            self._watch(f"exit-{container.id}", self._handle_init_exit, container)
        log.info("container %s: created, pid %d", req.id, container.pid)
        return shim_pb2.CreateTaskResponse(pid=container.pid)

    def _watch_cgroup(self, container: Container) -> None:
        """Find the container's cgroup (for Stats) and watch it for OOM kills. Done before the
        process runs its first instruction, so even an immediate OOM is seen."""
        try:
            cgroup = cgroup_for_pid(container.pid)
        except (CgroupError, OSError) as e:
            log.warning("container %s: no cgroup for stats and OOM events: %s", container.id,
                        describe(e))
            return
        self.cgroups[container.id] = cgroup
        try:
            self._oom.add(container.id, cgroup, self._on_oom)
        except (CgroupError, OSError) as e:
            log.warning("container %s: cannot watch for OOM kills: %s", container.id,
                        describe(e))

    def _on_oom(self, container_id: str) -> None:
        log.info("container %s: OOM kill", container_id)
        self.publisher.publish(events_pb2.TaskOOM(container_id=container_id))

    def _handle_init_exit(self, container: Container) -> None:
        exit_future = container.init_exit
        assert exit_future is not None
        exit = exit_future.result()
        container.init_gone()  # from now on, no exec may start
        init = container.init
        with init.lifecycle:
            container.kill_remaining()
            container.wait_execs_finished()  # their TaskExits go first
            deleted = init.state is State.DELETED
            if container.id in self._oom:
                self._oom.check_now(container.id)  # TaskOOM goes out before the TaskExit
                self._oom.remove(container.id)
            init.set_exited(exit.status, exit.timestamp_ns)
            if not deleted:  # a created-then-deleted container already had its TaskDelete
                self._publish_exit(container, init, exit.pid, exit.status)
        log.info("container %s: init %d exited with %d", container.id, exit.pid, exit.status)

    def _handle_exec_exit(self, container: Container, process: ExecProcess) -> None:
        try:
            exit = container.exit_of(process).result()
            with process.lifecycle:
                if container.id in self._oom:
                    self._oom.check_now(container.id)  # an OOM kill of the exec: TaskOOM first
                process.set_exited(exit.status, exit.timestamp_ns)
                self._publish_exit(container, process, exit.pid, exit.status)
        finally:
            container.exec_finished()
        log.info("container %s: exec %s (%d) exited with %d", container.id, process.exec_id,
                 exit.pid, exit.status)

    def Start(self, req: Any, ctx: CallContext) -> Message:
        container = self._container(req.id)
        if req.exec_id:
            return self._start_exec(container, self._exec(container, req.exec_id))
        with self._errors(req.id), container.init.lifecycle:
            pid = container.start()
            self.publisher.publish(events_pb2.TaskStart(container_id=req.id, pid=pid))
        if container.config.checkpoint and container.init_exit is not None:
            self._watch_cgroup(container)  # restored: watched from now
            self._watch(f"exit-{container.id}", self._handle_init_exit, container)
        return shim_pb2.StartResponse(pid=pid)

    def _start_exec(self, container: Container, process: ExecProcess) -> Message:
        with self._errors(container.id, process.exec_id):
            container.reserve_exec_start(process)
        try:
            with self._errors(container.id, process.exec_id), process.lifecycle:
                pid = container.start_exec(process)
                self.publisher.publish(events_pb2.TaskExecStarted(
                    container_id=container.id, exec_id=process.exec_id, pid=pid))
        except BaseException:
            container.exec_finished()
            raise
        self._watch(f"exit-{process.exec_id}", self._handle_exec_exit, container, process)
        return shim_pb2.StartResponse(pid=pid)

    def Exec(self, req: Any, ctx: CallContext) -> Message:
        container = self._container(req.id)
        with self._errors(req.id, req.exec_id):
            container.add_exec(req.exec_id, req.spec.value,
                               Stdio(req.stdin, req.stdout, req.stderr, req.terminal))
        self.publisher.publish(
            events_pb2.TaskExecAdded(container_id=req.id, exec_id=req.exec_id))
        return empty_pb2.Empty()

    def Delete(self, req: Any, ctx: CallContext) -> Message:
        container = self._container(req.id)
        process = self._process(container, req.exec_id)
        with self._errors(req.id, req.exec_id):
            if isinstance(process, ExecProcess):
                container.delete_exec(process)
            else:
                container.delete()
        response = shim_pb2.DeleteResponse(pid=process.pid, exit_status=process.exit_status)
        _set_ts(response.exited_at, process.exited_at_ns)
        if not req.exec_id:
            del self.containers[req.id]
            self.cgroups.pop(req.id, None)
            self._oom.remove(req.id)
            event = events_pb2.TaskDelete(
                container_id=req.id, pid=process.pid, exit_status=process.exit_status,
            )
            event.exited_at.CopyFrom(response.exited_at)
            self.publisher.publish(event)
            log.info("container %s: deleted", req.id)
        return response

    def Kill(self, req: Any, ctx: CallContext) -> Message:
        container = self._container(req.id)
        process = self._process(container, req.exec_id)
        with self._errors(req.id, req.exec_id):
            if isinstance(process, ExecProcess):
                container.kill_exec(process, req.signal)
            else:
                container.kill(req.signal, req.all)
        return empty_pb2.Empty()

    def Wait(self, req: Any, ctx: CallContext) -> Message:
        container = self._container(req.id)
        process = self._process(container, req.exec_id)
        process.wait()
        response = shim_pb2.WaitResponse(exit_status=process.exit_status)
        _set_ts(response.exited_at, process.exited_at_ns)
        return response

    def State(self, req: Any, ctx: CallContext) -> Message:
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

    def Pids(self, req: Any, ctx: CallContext) -> Message:
        container = self._container(req.id)
        with self._errors(req.id):
            pids = container.pids()
        exec_ids = {p.pid: p.exec_id for p in container.execs.values() if p.pid}
        processes = []
        for pid in pids:
            info = task_types_pb2.ProcessInfo(pid=pid)
            if pid in exec_ids:
                details = runc_options_pb2.ProcessDetails(exec_id=exec_ids[pid])
                info.info.CopyFrom(any_pb2.Any(
                    type_url=details.DESCRIPTOR.full_name, value=details.SerializeToString()))
            processes.append(info)
        return shim_pb2.PidsResponse(processes=processes)

    def CloseIO(self, req: Any, ctx: CallContext) -> Message:
        container = self._container(req.id)
        process = self._process(container, req.exec_id)
        if req.stdin:
            with self._errors(req.id, req.exec_id):
                container.close_stdin(process)
        return empty_pb2.Empty()

    def Pause(self, req: Any, ctx: CallContext) -> Message:
        container = self._container(req.id)
        with self._errors(req.id):
            container.pause()
        self.publisher.publish(events_pb2.TaskPaused(container_id=req.id))
        return empty_pb2.Empty()

    def Resume(self, req: Any, ctx: CallContext) -> Message:
        container = self._container(req.id)
        with self._errors(req.id):
            container.resume()
        self.publisher.publish(events_pb2.TaskResumed(container_id=req.id))
        return empty_pb2.Empty()

    def Update(self, req: Any, ctx: CallContext) -> Message:
        container = self._container(req.id)
        with self._errors(req.id):
            container.update(req.resources.value, dict(req.annotations))
        return empty_pb2.Empty()

    def Checkpoint(self, req: Any, ctx: CallContext) -> Message:
        container = self._container(req.id)
        opts = checkpoint_options(req.path, req.options, container.config.options)
        with self._errors(req.id):
            container.checkpoint(opts)
        self.publisher.publish(
            events_pb2.TaskCheckpointed(container_id=req.id, checkpoint=opts.image_path))
        return empty_pb2.Empty()

    def Connect(self, req: Any, ctx: CallContext) -> Message:
        container = self.containers.get(req.id)
        return shim_pb2.ConnectResponse(
            shim_pid=os.getpid(), task_pid=container.pid if container else 0
        )

    def Shutdown(self, req: Any, ctx: CallContext) -> Message:
        if not self.containers:
            # After the reply is on its way: containerd tolerates either order, but a reply
            # is kinder to its logs.
            self.on_shutdown()  # the server still answers this call before it stops
        return empty_pb2.Empty()

    def ResizePty(self, req: Any, ctx: CallContext) -> Message:
        container = self._container(req.id)
        process = self._process(container, req.exec_id)
        with self._errors(req.id, req.exec_id):
            container.resize_pty(process, req.width, req.height)
        return empty_pb2.Empty()

    def Stats(self, req: Any, ctx: CallContext) -> Message:
        container = self._container(req.id)
        cgroup = self.cgroups.get(req.id)
        if cgroup is None:
            raise status.not_found(f"container {req.id}: cgroup does not exist")
        try:
            metrics = cgroup.stats()
        except (CgroupError, OSError) as e:
            raise status.not_found(
                f"container {req.id}: failed to read stats: {describe(e)}") from e
        self._add_network(container, metrics)
        return shim_pb2.StatsResponse(stats=any_pb2.Any(
            type_url=cgroup.type_url, value=metrics.SerializeToString()))

    def _add_network(self, container: Container, metrics: Any) -> None:
        """One NetworkStat per interface of the container's own network namespace (none when it
        shares the host's); the Go shim leaves them out. A failure costs only these entries."""
        from pyrunc.oci import netstats

        pid = container.pid
        if not pid or container.init_exited or not netstats.has_own_netns(pid):
            return
        try:
            interfaces = netstats.read(pid, self.monitor)
        except (netstats.NetstatsError, OSError) as e:
            log.warning("container %s: no network statistics: %s", container.id, describe(e))
            return
        for name, counters in interfaces:
            metrics.network.add(name=name, **counters)
