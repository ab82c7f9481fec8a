"""The runtime options the OCI side acts on: runc's, as containerd.runc.v1.Options carries them,
and CRIU's for checkpoint and restore. Kept apart from the bundle helpers so that the short-lived
`start` and `delete` actions never pay for loading more than they use."""

from __future__ import annotations

from pyrunc.oci.record import FrozenRecord


class RuntimeOptions(FrozenRecord):
    """The fields of containerd.runc.v1.Options, as saved in the bundle's options.json."""

    _fields = ("no_pivot_root", "no_new_keyring", "shim_cgroup", "io_uid", "io_gid",
               "binary_name", "root", "criu_path", "systemd_cgroup", "criu_image_path",
               "criu_work_path")
    __slots__ = _fields
    _defaults = {  # noqa: RUF012 -- read only
        "no_pivot_root": False, "no_new_keyring": False, "shim_cgroup": "", "io_uid": 0,
        "io_gid": 0, "binary_name": "", "root": "", "criu_path": "", "systemd_cgroup": False,
        "criu_image_path": "", "criu_work_path": "",
    }
    no_pivot_root: bool
    no_new_keyring: bool
    shim_cgroup: str
    io_uid: int
    io_gid: int
    binary_name: str
    root: str
    criu_path: str
    systemd_cgroup: bool
    criu_image_path: str
    criu_work_path: str


class CheckpointOpts(FrozenRecord):
    """What `runc checkpoint` and `runc restore` are told about CRIU's job."""

    _fields = ("image_path", "work_path", "exit", "open_tcp", "external_unix_sockets", "terminal",
               "file_locks", "empty_namespaces", "cgroups_mode")
    __slots__ = _fields
    _defaults = {  # noqa: RUF012 -- read only
        "work_path": "", "exit": False, "open_tcp": False, "external_unix_sockets": False,
        "terminal": False, "file_locks": False, "empty_namespaces": (), "cgroups_mode": "",
    }
    image_path: str
    work_path: str
    exit: bool  # checkpoint only: stop the container afterwards
    open_tcp: bool
    external_unix_sockets: bool
    terminal: bool
    file_locks: bool
    empty_namespaces: tuple[str, ...]
    cgroups_mode: str

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
