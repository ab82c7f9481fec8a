"""One container: its bundle, its rootfs mounts, its processes and the runc calls on them.

The container owns what it sets up and takes it down in reverse order: mounts, then pipes and
relays, then the runc container. A Create that fails half-way undoes what it did before raising,
so a failed Create leaves nothing mounted and no runc container behind. An exec that fails to
start leaves nothing running.

It also keeps the count of exec processes that are starting or running, so that the init's exit
can be reported after theirs, and refuses new execs once the init is gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence

from pyrunc.oci import bundle as bundles
from pyrunc.oci import log
from pyrunc.oci.console import ConsoleIO, ConsoleSocket
from pyrunc.oci.errors import describe
from pyrunc.oci.monitor import ExitWatch, MountSpec, ProcessMonitor, RootfsMounts
from pyrunc.oci.options import CheckpointOpts, RuntimeOptions
from pyrunc.oci.process import Op, Process, State
from pyrunc.oci.record import FrozenRecord
from pyrunc.oci.runc import RuncError, read_pid_file, runc_for
from pyrunc.oci.stdio import FILE, PipeIO, Stdio

# After a process exits, how long Delete waits for its output to drain to containerd.
IO_DRAIN_TIMEOUT = 2.0
# How long runc may take to hand over a terminal's pty master.
CONSOLE_TIMEOUT = 30.0

ProcessIO = PipeIO | ConsoleIO
StdioFds = tuple[int | None, int | None, int | None]
# What runs runc for a process: given the fds for its stdio and a console socket path (or None).
RuncLaunch = Callable[[StdioFds, str | None], None]


class ContainerError(Exception):
    """An operation on a container failed for a reason other than a state refusal.

    `kind` says how containerd should see it: "not_found", "invalid", "exists",
    "precondition", or "" (unknown).
    """

    def __init__(self, message: str, kind: str = "") -> None:
        self.kind = kind
        super().__init__(message)


class CreateConfig(FrozenRecord):
    _fields = ("id", "bundle", "namespace", "rootfs", "stdio", "options", "checkpoint",
               "parent_checkpoint")
    __slots__ = _fields
    _defaults = {"checkpoint": "", "parent_checkpoint": ""}  # noqa: RUF012 -- read only
    id: str
    bundle: str
    namespace: str
    rootfs: Sequence[MountSpec]
    stdio: Stdio
    options: RuntimeOptions
    checkpoint: str  # restore from this checkpoint image instead of creating
    parent_checkpoint: str


class ExecProcess(Process):
    """An additional process in the container; `spec` is its OCI Process, as JSON."""

    def __init__(self, id: str, stdio: Stdio, *, exec_id: str, spec: bytes = b"") -> None:
        super().__init__(id, stdio, exec_id=exec_id)
        self.spec = spec


def with_terminal(spec: bytes, terminal: bool) -> bytes:
    """The exec's OCI Process with `terminal` as the request has it, as the Go shim does.

    containerd's Go client asks for a tty in ExecProcessRequest.terminal and may leave the spec's
    own `terminal` false; runc goes by the spec, and refuses a console socket without a tty
    ("cannot use console socket if runc will not detach or allocate tty"). So the request
    decides, both ways. A spec that already agrees is handed on byte for byte.
    """
    import json

    try:
        process = json.loads(spec)
    except ValueError as e:  # (UnicodeDecodeError is one)
        raise ContainerError(f"invalid process spec: {e}") from e
    if not isinstance(process, dict):
        raise ContainerError("invalid process spec: not a JSON object")
    if bool(process.get("terminal", False)) is terminal:
        return spec
    process["terminal"] = terminal
    return json.dumps(process, separators=(",", ":")).encode()


def _io_start_failed(io: ProcessIO) -> str:
    """What failed, in the Go shim's words, when a process's I/O could not start: it opens log
    files and starts logging binaries while creating the I/O, before runc runs, and only then
    starts copying to containerd's fifos (or the console)."""
    if isinstance(io, ConsoleIO):
        return "failed to start console copy"
    if io.uri.is_binary or io.uri.scheme == FILE:
        return "failed to create init process I/O"
    return "failed to start io pipe copy"


class Container:
    def __init__(self, config: CreateConfig, monitor: ProcessMonitor, mounts: RootfsMounts
                 ) -> None:
        self.id = config.id
        self.mounts = mounts
        self.bundle = config.bundle
        self.config = config
        self.runc = runc_for(config.bundle, config.namespace, config.options, monitor)
        self.monitor = monitor
        self.rootfs = os.path.join(config.bundle, "rootfs") if config.rootfs else ""
        self.init = Process(id=config.id, stdio=config.stdio)
        self.execs: dict[str, ExecProcess] = {}
        self.annotations: dict[str, str] = {}
        spec = bundles.load_spec(config.bundle)
        self.kill_all_on_exit = not bundles.has_own_pid_namespace(spec)
        self._io: dict[str, ProcessIO] = {}  # by exec id; "" is the init's
        self._exits: dict[str, ExitWatch] = {}
        self.init_exited = False  # set as soon as the init's exit is seen: no new execs
        self._running_execs = 0
        self._execs_idle = threading.Event()
        self._execs_idle.set()
        self._execs_lock = threading.Lock()  # request and exit threads count execs

    @property
    def pid(self) -> int:
        return self.init.pid

    def process(self, exec_id: str) -> Process:
        if not exec_id:
            return self.init
        try:
            return self.execs[exec_id]
        except KeyError:
            raise ContainerError(f"process does not exist {exec_id}", "not_found") from None

    def exit_of(self, process: Process) -> ExitWatch:
        return self._exits[process.exec_id]

    # --- init ----------------------------------------------------------------------------

    def create(self) -> None:
        """Mount the rootfs, create the runc container, start relaying its stdio."""
        cfg = self.config
        for m in cfg.rootfs:
            try:
                self.mounts.check(m)
            except self.mounts.MountError as e:
                raise ContainerError(str(e), "invalid") from e
        bundles.write_options(cfg.bundle, cfg.options)
        bundles.write_runtime(cfg.bundle, self.runc.binary)
        if self.rootfs:
            with contextlib.suppress(FileExistsError):
                os.mkdir(self.rootfs, 0o711)
            try:
                self.mounts.mount_all(cfg.rootfs, self.rootfs)
            except self.mounts.MountError as e:
                raise ContainerError(f"failed to mount rootfs component: {e}") from e
        try:
            if cfg.checkpoint:
                return  # `runc restore` at Start creates and starts in one go
            pid_file = os.path.join(cfg.bundle, bundles.INIT_PID_FILE)

            def create(stdio: StdioFds, console: str | None) -> None:
                try:
                    self.runc.create(
                        self.id, cfg.bundle, pid_file, stdio=stdio, console_socket=console,
                        no_pivot=cfg.options.no_pivot_root,
                        no_new_keyring=cfg.options.no_new_keyring,
                    )
                except RuncError as e:
                    raise ContainerError(f"OCI runtime create failed: {e.message}") from e

            self._launch("", self.init, cfg.stdio, pid_file, create)
        except BaseException:
            self._undo_create()
            raise

    def _launch(self, key: str, process: Process, stdio: Stdio, pid_file: str,
                run: RuncLaunch) -> None:
        """Give a process its stdio (pipes, or a terminal through a console socket), have runc
        start it, then learn its pid, watch its exit and begin relaying."""
        since = time.time_ns()
        master: int | None = None
        io: ProcessIO
        if stdio.terminal:
            io = self._keep_io(key, lambda: ConsoleIO(stdio))
            with ConsoleSocket() as console:
                # runc connects and sends the pty master while it runs; the connection waits
                # in the socket's backlog, so it is taken once runc is done (as the Go shim
                # does), and a runc that failed leaves nothing to receive.
                run((None, None, None), console.path)
                try:
                    master = console.receive_master(CONSOLE_TIMEOUT)
                except (OSError, TimeoutError) as e:
                    raise ContainerError(f"failed to retrieve console master: {describe(e)}") from e
        else:
            pipes = self._keep_io(key, lambda: PipeIO(
                stdio, self.config.options.io_uid or -1, self.config.options.io_gid or -1,
                monitor=self.monitor, container_id=process.id, namespace=self.config.namespace,
            ))
            assert isinstance(pipes, PipeIO)
            io = pipes
            run(pipes.runc_stdio(), None)
        process.pid = read_pid_file(pid_file)
        if not process.pid:
            raise ContainerError(f"failed to read the pid of {process.id} from {pid_file}")
        self._exits[key] = self.monitor.watch(process.pid, since)
        try:
            if isinstance(io, ConsoleIO):
                assert master is not None
                io.start(master)
            else:
                io.close_runc_side()
                io.start()
        except (OSError, RuntimeError, TimeoutError) as e:
            raise ContainerError(f"{_io_start_failed(io)}: {describe(e)}") from e

    def _keep_io(self, key: str, make: Callable[[], ProcessIO]) -> ProcessIO:
        try:
            io = make()
        except OSError as e:  # (the Go shim says "init" for exec processes too)
            raise ContainerError(
                f"failed to create init process I/O: {describe(e)}", "invalid") from e
        self._io[key] = io
        return io

    def _undo_create(self) -> None:
        with contextlib.suppress(RuncError):
            self.runc.delete(self.id, force=True)
        io = self._io.pop("", None)
        if io is not None:
            io.close()
        self._unmount_quietly()

    def start(self) -> int:
        self.init.check(Op.START)
        if self.config.checkpoint:
            self._restore()
        else:
            try:
                self.runc.start(self.id)
            except RuncError as e:
                raise ContainerError(f"OCI runtime start failed: {e.message}") from e
        if self.init.state is State.CREATED:  # it may already have exited meanwhile
            self.init.transition(State.RUNNING)
        return self.init.pid

    def _restore(self) -> None:
        cfg = self.config
        pid_file = os.path.join(cfg.bundle, bundles.INIT_PID_FILE)
        opts = CheckpointOpts(
            image_path=cfg.checkpoint,
            work_path=cfg.options.criu_work_path or os.path.join(cfg.bundle, "criu-work"),
        )

        def restore(stdio: StdioFds, console: str | None) -> None:
            try:
                self.runc.restore(self.id, cfg.bundle, pid_file, opts, stdio=stdio,
                                        console_socket=console,
                                        no_pivot=cfg.options.no_pivot_root)
            except RuncError as e:
                # runc restore cleans up after itself; make sure, then report CRIU's complaint.
                with contextlib.suppress(RuncError):
                    self.runc.delete(self.id, force=True)
                raise ContainerError(f"OCI runtime restore failed: {e.message}") from e

        self._launch("", self.init, cfg.stdio, pid_file, restore)

    @property
    def init_exit(self) -> ExitWatch | None:
        return self._exits.get("")

    def kill(self, sig: int, all: bool = False) -> None:
        self.init.check(Op.KILL)
        try:
            self.runc.kill(self.id, sig, all=all)
        except RuncError as e:
            if e.process_finished:
                raise ContainerError("process already finished", "not_found") from e
            if e.not_exist:
                raise ContainerError("no such container", "not_found") from e
            raise ContainerError(f"unknown error after kill: {e.message}") from e

    def kill_remaining(self) -> None:
        """The init process is gone. With a pid namespace of its own the kernel has killed the
        rest; without one, the shim must kill every other process of the container itself."""
        if self.kill_all_on_exit:
            with contextlib.suppress(RuncError):
                self.runc.kill(self.id, signal.SIGKILL, all=True)

    def pause(self) -> None:
        self.init.check(Op.PAUSE)
        try:
            self.runc.pause(self.id)
        except RuncError as e:
            raise ContainerError(f"OCI runtime pause failed: {e.message}") from e
        self.init.transition(State.PAUSED)

    def resume(self) -> None:
        self.init.check(Op.RESUME)
        try:
            self.runc.resume(self.id)
        except RuncError as e:
            raise ContainerError(f"OCI runtime resume failed: {e.message}") from e
        if self.init.state is State.PAUSED:
            self.init.transition(State.RUNNING)

    def update(self, resources_json: bytes, annotations: dict[str, str]) -> None:
        self.init.check(Op.UPDATE)
        if resources_json:
            try:
                self.runc.update(self.id, resources_json)
            except RuncError as e:
                raise ContainerError(f"OCI runtime update failed: {e.message}") from e
        self.annotations.update(annotations)

    def checkpoint(self, opts: CheckpointOpts) -> None:
        self.init.check(Op.CHECKPOINT)
        work = opts.work_path or os.path.join(self.bundle, "criu-work")
        try:
            self.runc.checkpoint(self.id, opts.replace(work_path=work))
        except RuncError as e:
            raise ContainerError(
                f"OCI runtime checkpoint failed: {e.message} (criu work path {work})"
            ) from e

    def delete(self) -> None:
        """runc delete, then stdio, then mounts: reverse order of Create."""
        self.init.check(Op.DELETE)
        io = self._io.get("")
        if io is not None:
            io.wait(IO_DRAIN_TIMEOUT)
        error: ContainerError | None = None
        try:
            self.runc.delete(self.id)
        except RuncError as e:
            # A container runc no longer knows (after a checkpoint, say) is already deleted.
            if not e.not_exist:
                error = ContainerError(f"failed to delete task: {e.message}")
        for key in list(self._io):
            self._io.pop(key).close()
        try:
            if self.rootfs:
                self.mounts.unmount_all(self.rootfs)
        except self.mounts.MountError as e:
            log.warning("container %s: failed to clean up rootfs mount: %s", self.id, e)
        if error is not None:
            raise error
        self.init.transition(State.DELETED)

    def pids(self) -> list[int]:
        try:
            return self.runc.ps(self.id)
        except RuncError as e:
            raise ContainerError(f"failed to list processes: {e.message}") from e

    # --- exec processes ------------------------------------------------------------------

    def add_exec(self, exec_id: str, spec: bytes, stdio: Stdio) -> ExecProcess:
        bundles.validate_id("exec", exec_id)
        if exec_id in self.execs:
            raise ContainerError(f"exec {exec_id} already exists", "exists")
        self.init.check(Op.EXEC)
        process = ExecProcess(id=exec_id, stdio=stdio, exec_id=exec_id,
                              spec=with_terminal(spec, stdio.terminal))
        self.execs[exec_id] = process
        return process

    def reserve_exec_start(self, process: ExecProcess) -> None:
        """Count the exec as running from before `runc exec`, so that an init exit meanwhile
        waits for it; refused once the init is gone."""
        process.check(Op.START)
        with self._execs_lock:
            if self.init_exited or self.init.has_exited:
                raise ContainerError(
                    f"cannot start exec {process.exec_id}: the container's init has exited",
                    "precondition",
                )
            self._running_execs += 1
            self._execs_idle.clear()

    def init_gone(self) -> None:
        """The init's exit is seen: from now on no exec may start."""
        with self._execs_lock:
            self.init_exited = True

    def exec_finished(self) -> None:
        with self._execs_lock:
            self._running_execs -= 1
            if self._running_execs <= 0:
                self._running_execs = 0
                self._execs_idle.set()

    def wait_execs_finished(self) -> None:
        self._execs_idle.wait()

    def start_exec(self, process: ExecProcess) -> int:
        key = process.exec_id
        process_file = os.path.join(self.bundle, f"{key}.process.json")
        pid_file = os.path.join(self.bundle, f"{key}.pid")
        with open(process_file, "wb") as f:
            f.write(process.spec)

        def exec_(stdio: StdioFds, console: str | None) -> None:
            try:
                self.runc.exec(self.id, process_file, pid_file, stdio=stdio,
                                     console_socket=console)
            except RuncError as e:
                raise ContainerError(f"OCI runtime exec failed: {e.message}") from e
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(process_file)

        try:
            self._launch(key, process, process.stdio, pid_file, exec_)
        except BaseException:
            with contextlib.suppress(KeyError):
                self._io.pop(key).close()
            if process.pid:  # started, then failed half-way: leave nothing running
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
            raise
        if process.state is State.CREATED:
            process.transition(State.RUNNING)
        return process.pid

    def kill_exec(self, process: ExecProcess, sig: int) -> None:
        process.check(Op.KILL)
        if not process.pid:
            raise ContainerError(f"exec {process.exec_id} is not started", "precondition")
        if process.has_exited:
            raise ContainerError("process already finished", "not_found")
        try:
            os.kill(process.pid, sig)
        except ProcessLookupError as e:
            raise ContainerError("process already finished", "not_found") from e

    def delete_exec(self, process: ExecProcess) -> None:
        process.check(Op.DELETE)
        io = self._io.pop(process.exec_id, None)
        if io is not None:
            io.wait(IO_DRAIN_TIMEOUT)
            io.close()
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(self.bundle, f"{process.exec_id}.pid"))
        process.transition(State.DELETED)
        del self.execs[process.exec_id]

    def resize_pty(self, process: Process, width: int, height: int) -> None:
        """A process without a terminal has nothing to resize (as the Go shim: no error)."""
        io = self._io.get(process.exec_id)
        if isinstance(io, ConsoleIO):
            io.resize(width, height)

    def close_stdin(self, process: Process) -> None:
        process.check(Op.CLOSE_IO)
        io = self._io.get(process.exec_id)
        if io is not None:
            io.close_stdin()

    def _unmount_quietly(self) -> None:
        if self.rootfs:
            try:
                self.mounts.unmount_all(self.rootfs)
            except self.mounts.MountError as e:
                log.warning("container %s: failed to undo rootfs mount: %s", self.id, e)
