"""One container: its bundle, its rootfs mounts, its init process and the runc calls on it.

The container owns what it sets up and takes it down in reverse order: mounts, then pipes and
relays, then the runc container. A Create that fails half-way undoes what it did before raising,
so a failed Create leaves nothing mounted and no runc container behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass

from pyrunc.oci import bundle as bundles
from pyrunc.oci.monitor import Exit, ProcessMonitor
from pyrunc.oci.mount import Mount, MountError, mount_all, unmount_all
from pyrunc.oci.process import Op, Process, State
from pyrunc.oci.runc import DEFAULT_RUNC_ROOT, Runc, RuncError, read_pid_file
from pyrunc.oci.stdio import PipeIO, Stdio

log = logging.getLogger("pyrunc.oci")

# After the process exits, how long Delete waits for its output to drain to containerd.
IO_DRAIN_TIMEOUT = 2.0


class ContainerError(Exception):
    """An operation on a container failed for a reason other than its state.

    `kind` says how containerd should see it: "not_found", "invalid", or "" (unknown).
    """

    def __init__(self, message: str, kind: str = "") -> None:
        self.kind = kind
        super().__init__(message)


@dataclass(frozen=True)
class CreateConfig:
    id: str
    bundle: str
    namespace: str
    rootfs: Sequence[Mount]
    stdio: Stdio
    options: bundles.RuntimeOptions


def runc_for(bundle: str, namespace: str, options: bundles.RuntimeOptions,
             monitor: ProcessMonitor) -> Runc:
    return Runc(
        monitor=monitor,
        root=os.path.join(options.root or DEFAULT_RUNC_ROOT, namespace),
        log=os.path.join(bundle, "log.json"),
        binary=options.binary_name or "runc",
        systemd_cgroup=options.systemd_cgroup,
    )


class Container:
    def __init__(self, config: CreateConfig, monitor: ProcessMonitor) -> None:
        self.id = config.id
        self.bundle = config.bundle
        self.config = config
        self.runc = runc_for(config.bundle, config.namespace, config.options, monitor)
        self.monitor = monitor
        self.rootfs = os.path.join(config.bundle, "rootfs") if config.rootfs else ""
        self.init = Process(id=config.id, stdio=config.stdio)
        self.io: PipeIO | None = None
        self.init_exit: asyncio.Future[Exit] | None = None
        spec = bundles.load_spec(config.bundle)
        self.kill_all_on_exit = not bundles.has_own_pid_namespace(spec)
        # Serializes a process's start with the publication of its exit (see the task service).
        self.lifecycle = asyncio.Lock()

    @property
    def pid(self) -> int:
        return self.init.pid

    async def create(self) -> None:
        """Mount the rootfs, create the runc container, start relaying its stdio."""
        cfg = self.config
        if cfg.stdio.terminal:
            raise ContainerError(
                f"container {self.id}: terminal (tty) is not supported yet", "invalid"
            )
        bundles.write_options(cfg.bundle, cfg.options)
        bundles.write_runtime(cfg.bundle, self.runc.binary)
        if self.rootfs:
            with contextlib.suppress(FileExistsError):
                os.mkdir(self.rootfs, 0o711)
            try:
                mount_all(cfg.rootfs, self.rootfs)
            except MountError as e:
                raise ContainerError(f"failed to mount rootfs component: {e}") from e
        try:
            await self._create_process()
        except BaseException:
            self._unmount_quietly()
            raise

    async def _create_process(self) -> None:
        cfg = self.config
        try:
            self.io = PipeIO(cfg.stdio, cfg.options.io_uid or -1, cfg.options.io_gid or -1)
        except OSError as e:
            raise ContainerError(f"failed to create init process I/O: {e}") from e
        pid_file = os.path.join(cfg.bundle, bundles.INIT_PID_FILE)
        since = time.time_ns()
        try:
            await self.runc.create(
                self.id, cfg.bundle, pid_file, stdio=self.io.runc_stdio(),
                no_pivot=cfg.options.no_pivot_root, no_new_keyring=cfg.options.no_new_keyring,
            )
        except RuncError as e:
            self.io.close()
            raise ContainerError(f"OCI runtime create failed: {e.message}") from e
        except BaseException:
            self.io.close()
            raise
        self.init.pid = read_pid_file(pid_file)
        self.init_exit = self.monitor.watch(self.init.pid, since) if self.init.pid else None
        self.io.close_runc_side()
        try:
            self.io.start()
        except OSError as e:
            await self._undo_create()
            raise ContainerError(f"failed to start io pipe copy: {e}") from e
        if self.init_exit is None:
            await self._undo_create()
            raise ContainerError(f"failed to read init pid from {pid_file}")

    async def _undo_create(self) -> None:
        with contextlib.suppress(RuncError):
            await self.runc.delete(self.id, force=True)
        if self.io is not None:
            await self.io.aclose()

    async def start(self) -> int:
        self.init.check(Op.START)
        try:
            await self.runc.start(self.id)
        except RuncError as e:
            raise ContainerError(f"OCI runtime start failed: {e.message}") from e
        if self.init.state is State.CREATED:  # it may already have exited meanwhile
            self.init.transition(State.RUNNING)
        return self.init.pid

    async def kill(self, sig: int, all: bool = False) -> None:
        self.init.check(Op.KILL)
        try:
            await self.runc.kill(self.id, sig, all=all)
        except RuncError as e:
            if e.process_finished:
                raise ContainerError("process already finished", "not_found") from e
            if e.not_exist:
                raise ContainerError("no such container", "not_found") from e
            raise ContainerError(f"unknown error after kill: {e.message}") from e

    async def kill_remaining(self) -> None:
        """The init process is gone. With a pid namespace of its own the kernel has killed the
        rest; without one, the shim must kill every other process of the container itself."""
        if self.kill_all_on_exit:
            with contextlib.suppress(RuncError):
                await self.runc.kill(self.id, signal.SIGKILL, all=True)

    def close_stdin(self) -> None:
        self.init.check(Op.CLOSE_IO)
        if self.io is not None:
            self.io.close_stdin()

    async def delete(self) -> None:
        """runc delete, then stdio, then mounts: reverse order of Create."""
        self.init.check(Op.DELETE)
        if self.io is not None:
            await self.io.wait(IO_DRAIN_TIMEOUT)
        error: ContainerError | None = None
        try:
            await self.runc.delete(self.id)
        except RuncError as e:
            # A container runc no longer knows (after a checkpoint, say) is already deleted.
            if not e.not_exist:
                error = ContainerError(f"failed to delete task: {e.message}")
        if self.io is not None:
            await self.io.aclose()
        try:
            if self.rootfs:
                unmount_all(self.rootfs)
        except MountError as e:
            log.warning("container %s: failed to clean up rootfs mount: %s", self.id, e)
        if error is not None:
            raise error
        self.init.transition(State.DELETED)

    async def pids(self) -> list[int]:
        try:
            return await self.runc.ps(self.id)
        except RuncError as e:
            raise ContainerError(f"failed to list processes: {e.message}") from e

    def _unmount_quietly(self) -> None:
        if self.rootfs:
            try:
                unmount_all(self.rootfs)
            except MountError as e:
                log.warning("container %s: failed to undo rootfs mount: %s", self.id, e)
