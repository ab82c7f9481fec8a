"""containerd-shim-pywasm-v1: WebAssembly (WASI) tasks through wasmtime, on pyrunc's framework.

Runtime `io.containerd.pywasm.v1`. Each task is a child process of its own (runner.py), spawned
through the framework's reaper at Create: it opens the task's stdio fifos, compiles the module
named by the spec's `process.args[0]` inside the rootfs and waits; Start lets it run. The shim
never imports wasmtime, so it costs what the framework costs. Exec, Pause, Resume, Checkpoint,
Update and Stats answer Unimplemented.

Built on the framework's public API only: api (the hooks), fifo (in the runner), mount, reaper
(ctx.monitor), publisher (ctx.publisher), ttrpc (Method, status) and the generated protos.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

from pyrunc.protos import empty_pb2, events_pb2, shim_pb2, task_types_pb2
from pyrunc.shim import log, mount
from pyrunc.shim.api import Shim, ShimContext
from pyrunc.shim.ttrpc import status
from pyrunc.shim.ttrpc.server import CallContext, Method

Message = Any  # the generated protobuf classes are untyped

TASK_SERVICES = ("containerd.task.v2.Task", "containerd.task.v3.Task")
RUNNER = "pyrunc.examples.wasm.runner"
PID_FILE = "wasm.pid"
READY_TIMEOUT = 60.0  # for the runner to meet the client on the fifos and compile the module
UNSUPPORTED = ("Exec", "Pause", "Resume", "Checkpoint", "Update", "Stats")
GO_ZERO_TIME_NS = -62135596800 * 1_000_000_000  # exited_at of a task that has not exited


def _timestamp(field: Any, ns: int) -> None:
    field.seconds, field.nanos = divmod(ns, 1_000_000_000)


class Task:
    """One container: its runner process and what containerd asks of it."""

    def __init__(self, req: Any, pid: int, watch: Any, go: int) -> None:
        self.id, self.bundle, self.pid, self.watch = req.id, req.bundle, pid, watch
        self.stdio = (req.stdin, req.stdout, req.stderr)
        self.go = go  # the runner starts the module when this pipe gets a byte
        self.started = False
        self.deleted = False  # deleted before it ran: its exit goes unpublished, as with runc
        self.exit_status = 0
        self.exited_ns = GO_ZERO_TIME_NS
        self.exited = threading.Event()
        self.lock = threading.Lock()  # Start and the exit: TaskStart goes before TaskExit

    @property
    def status(self) -> int:
        if self.exited.is_set():
            return int(task_types_pb2.STOPPED)
        return int(task_types_pb2.RUNNING if self.started else task_types_pb2.CREATED)


class WasmTasks:
    """The Task service for WASI modules."""

    def __init__(self, ctx: ShimContext) -> None:
        self.ctx = ctx
        self.tasks: dict[str, Task] = {}

    def methods(self) -> dict[str, Method]:
        service = shim_pb2.DESCRIPTOR.services_by_name["Task"]
        return {m.name: Method(getattr(shim_pb2, m.input_type.name),
                               getattr(self, m.name, None) or _unsupported(m.name))
                for m in service.methods}

    def _task(self, id: str, exec_id: str = "") -> Task:
        task = self.tasks.get(id)
        if task is None:
            raise status.not_found(f"container {id}: container not created")
        if exec_id:  # there are no execs
            raise status.not_found(f"container {id}: process does not exist {exec_id}")
        return task

    def Create(self, req: Any, call: CallContext) -> Message:
        if req.id in self.tasks:
            raise status.already_exists(f"container {req.id}: already exists in this shim")
        if req.terminal:
            raise status.invalid_argument(f"container {req.id}: the wasm shim has no terminal")
        if req.checkpoint:
            raise status.unimplemented(f"container {req.id}: the wasm shim cannot restore")
        mounts = mount.from_protos(req.rootfs)
        try:
            mount.mount_rootfs(mounts, req.bundle)
        except mount.MountError as e:
            raise status.unknown(f"container {req.id}: failed to mount rootfs component: {e}"
                                 ) from e
        try:
            task = self._spawn(req)
        except BaseException:
            mount.unmount_rootfs(req.bundle)
            raise
        self.tasks[req.id] = task
        event = events_pb2.TaskCreate(
            container_id=req.id, bundle=req.bundle, pid=task.pid,
            io=events_pb2.TaskIO(stdin=req.stdin, stdout=req.stdout, stderr=req.stderr))
        event.rootfs.extend(req.rootfs)
        self.ctx.publisher.publish(event)
        threading.Thread(target=self._on_exit, args=(task,), name=f"exit-{req.id}",
                         daemon=True).start()
        return shim_pb2.CreateTaskResponse(pid=task.pid)

    def _spawn(self, req: Any) -> Task:
        """Start the runner and wait until it has its stdio and a compiled module."""
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        go_r, go_w = os.pipe2(os.O_CLOEXEC)
        argv = [sys.executable, "-I", "-m", RUNNER, req.bundle, req.stdin, req.stdout,
                req.stderr]
        try:
            pid, watch = self.ctx.monitor.spawn(argv, stderr=2, extra_fds=(ready_w, go_r))
        except OSError:
            for fd in (ready_r, ready_w, go_r, go_w):
                os.close(fd)
            raise
        os.close(ready_w)
        os.close(go_r)
        with open(os.path.join(req.bundle, PID_FILE), "w") as f:  # for `delete` after a crash
            f.write(str(pid))
        try:
            report = _read_report(ready_r, READY_TIMEOUT)
        finally:
            os.close(ready_r)
        if report != "ok":
            os.close(go_w)
            if not watch.wait(5):
                os.kill(pid, 9)
                watch.result()
            raise status.unknown(f"container {req.id}: {report or 'the wasm runner died'}")
        return Task(req, pid, watch, go_w)

    def _on_exit(self, task: Task) -> None:
        exit = task.watch.result()
        with task.lock:
            task.exit_status, task.exited_ns = exit.status, exit.timestamp_ns
            task.exited.set()
            _close(task)
            if not task.deleted:
                event = events_pb2.TaskExit(container_id=task.id, id=task.id, pid=task.pid,
                                            exit_status=exit.status)
                _timestamp(event.exited_at, exit.timestamp_ns)
                self.ctx.publisher.publish(event)
        log.info("container %s: exited with %d", task.id, exit.status)

    def Start(self, req: Any, call: CallContext) -> Message:
        task = self._task(req.id, req.exec_id)
        with task.lock:
            if task.started or task.exited.is_set():
                state = "running" if not task.exited.is_set() else "stopped"
                raise status.failed_precondition(
                    f"container {req.id}: cannot start a process in {state} state")
            os.write(task.go, b"\x01")
            task.started = True
            _close(task)
            self.ctx.publisher.publish(events_pb2.TaskStart(container_id=req.id, pid=task.pid))
        return shim_pb2.StartResponse(pid=task.pid)

    def Kill(self, req: Any, call: CallContext) -> Message:
        task = self._task(req.id, req.exec_id)
        with task.lock:  # an exited pid is reaped and may be reused: never signal it then
            if task.exited.is_set():
                raise status.not_found(f"container {req.id}: process already finished")
            os.kill(task.pid, req.signal)
        return empty_pb2.Empty()

    def Wait(self, req: Any, call: CallContext) -> Message:
        task = self._task(req.id, req.exec_id)
        task.exited.wait()
        response = shim_pb2.WaitResponse(exit_status=task.exit_status)
        _timestamp(response.exited_at, task.exited_ns)
        return response

    def Delete(self, req: Any, call: CallContext) -> Message:
        task = self._task(req.id, req.exec_id)
        if task.started and not task.exited.is_set():
            raise status.failed_precondition(
                f"container {req.id}: cannot delete a process in running state")
        if not task.exited.is_set():  # created, never started: it goes without a TaskExit
            with task.lock:
                task.deleted = task.started = True  # nothing may start it now
                if not task.exited.is_set():
                    os.kill(task.pid, 9)
            task.exited.wait()
        if self.tasks.pop(req.id, None) is None:  # a concurrent Delete came first
            raise status.not_found(f"container {req.id}: container not created")
        try:
            mount.unmount_rootfs(task.bundle)
        except mount.MountError as e:
            log.warning("container %s: failed to clean up rootfs mount: %s", req.id, e)
        response = shim_pb2.DeleteResponse(pid=task.pid, exit_status=task.exit_status)
        _timestamp(response.exited_at, task.exited_ns)
        event = events_pb2.TaskDelete(container_id=req.id, pid=task.pid,
                                      exit_status=task.exit_status)
        event.exited_at.CopyFrom(response.exited_at)
        self.ctx.publisher.publish(event)
        return response

    def State(self, req: Any, call: CallContext) -> Message:
        task = self._task(req.id, req.exec_id)
        stdin, stdout, stderr = task.stdio
        response = shim_pb2.StateResponse(
            id=task.id, bundle=task.bundle, pid=task.pid, status=task.status, stdin=stdin,
            stdout=stdout, stderr=stderr, exit_status=task.exit_status)
        _timestamp(response.exited_at, task.exited_ns)
        return response

    def Pids(self, req: Any, call: CallContext) -> Message:
        task = self._task(req.id)
        running = [] if task.exited.is_set() else [task_types_pb2.ProcessInfo(pid=task.pid)]
        return shim_pb2.PidsResponse(processes=running)

    def CloseIO(self, req: Any, call: CallContext) -> Message:
        self._task(req.id, req.exec_id)  # the runner relays stdin until the client closes it
        return empty_pb2.Empty()

    def ResizePty(self, req: Any, call: CallContext) -> Message:
        self._task(req.id, req.exec_id)  # no terminal: nothing to resize (runc shim: the same)
        return empty_pb2.Empty()

    def Connect(self, req: Any, call: CallContext) -> Message:
        task = self.tasks.get(req.id)
        return shim_pb2.ConnectResponse(shim_pid=os.getpid(), task_pid=task.pid if task else 0)

    def Shutdown(self, req: Any, call: CallContext) -> Message:
        if not self.tasks:
            self.ctx.shutdown()
        return empty_pb2.Empty()


def _unsupported(name: str) -> Any:
    def refuse(req: Any, call: CallContext) -> Message:
        raise status.unimplemented(f"{name} is not supported by the WebAssembly shim (pywasm)")

    return refuse


def _close(task: Task) -> None:
    if task.go >= 0:
        os.close(task.go)
        task.go = -1


def _read_report(fd: int, timeout: float) -> str:
    """The runner's one line: "ok", or why it cannot run the module ("" if it died)."""
    import select

    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return "timed out waiting for the wasm runner (its stdio fifos, or compiling)"
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").strip()


class WasmShim(Shim):
    runtime = "io.containerd.pywasm.v1"
    module = "pyrunc.examples.wasm.shim"
    summary = "containerd runtime v2 shim for WebAssembly (WASI) through wasmtime."

    def services(self, ctx: ShimContext) -> dict[str, dict[str, Method]]:
        methods = WasmTasks(ctx).methods()
        return {name: methods for name in TASK_SERVICES}

    def delete(self, namespace: str, id: str, bundle: str) -> int:
        """After a killed shim: kill its runner if it still runs, unmount the rootfs."""
        try:
            with open(os.path.join(bundle, PID_FILE)) as f:
                pid = int(f.read())
        except (OSError, ValueError):
            pid = 0
        if pid and _is_runner_of(pid, bundle):
            os.kill(pid, 9)
        try:
            mount.unmount_rootfs(bundle)
        except mount.MountError as e:
            print(f"pywasm: failed to clean up rootfs mount of {id}: {e}", file=sys.stderr)
        return pid


def _is_runner_of(pid: int, bundle: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return RUNNER.encode() in argv and bundle.encode() in argv


SHIM = WasmShim()


def main() -> None:
    from pyrunc.shim.cli import main as run

    run(SHIM)


if __name__ == "__main__":
    main()
