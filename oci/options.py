"""The runtime options the OCI side acts on: runc's, as containerd.runc.v1.Options carries them,
and CRIU's for checkpoint and restore. Kept apart from the bundle helpers so that the short-lived
`start` and `delete` actions never pay for importing dataclasses."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RuntimeOptions:
    """The fields of containerd.runc.v1.Options, as saved in the bundle's options.json."""

    no_pivot_root: bool = False
    no_new_keyring: bool = False
    shim_cgroup: str = ""
    io_uid: int = 0
    io_gid: int = 0
    binary_name: str = ""
    root: str = ""
    criu_path: str = ""
    systemd_cgroup: bool = False
    criu_image_path: str = ""
    criu_work_path: str = ""


@dataclass(frozen=True)
class CheckpointOpts:
    """What `runc checkpoint` and `runc restore` are told about CRIU's job."""

    image_path: str
    work_path: str = ""
    exit: bool = False  # checkpoint only: stop the container afterwards
    open_tcp: bool = False
    external_unix_sockets: bool = False
    terminal: bool = False
    file_locks: bool = False
    empty_namespaces: tuple[str, ...] = ()
    cgroups_mode: str = ""

    def args(self) -> list[str]:
        args = ["--image-path", self.image_path]
        if self.work_path:
            args += ["--work-path", self.work_path]
        if self.open_tcp:
            args.append("--tcp-established")
        if self.external_unix_sockets:
            args.append("--ext-unix-sk")
        if self.terminal:
            args.append("--shell-job")
        if self.file_locks:
            args.append("--file-locks")
        for ns in self.empty_namespaces:
            args += ["--empty-ns", ns]
        if self.cgroups_mode:
            args += ["--manage-cgroups-mode", self.cgroups_mode]
        return args
