"""A busybox test image, built locally because no registry can be reached.

The image is described once as a list of entries (`rootfs_entries`) and then either written out as a
plain directory (for `ctr run --rootfs DIR`) or packed into an OCI image layout tar (for
`ctr image import`). Everything in the tar has fixed metadata (mtime, owner, order, gzip header), so
building twice gives the same bytes and the same digests.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

BUSYBOX = Path("/usr/bin/busybox")
# 2023-01-01T00:00:00Z: any fixed time works; 0 upsets some tools.
FIXED_MTIME = 1672531200
CREATED = "2023-01-01T00:00:00Z"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"

PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\nnobody:x:65534:\n"

EntryKind = Literal["dir", "file", "symlink"]


@dataclass(frozen=True)
class Entry:
    """One path of the root filesystem, relative to it (no leading slash)."""

    path: str
    kind: EntryKind
    mode: int
    data: bytes = b""
    target: str = ""


def busybox_applets(busybox: Path = BUSYBOX) -> list[str]:
    """The applet names this busybox provides (`busybox --list`), without `busybox` itself."""
    out = subprocess.run(
        [str(busybox), "--list"], check=True, capture_output=True, timeout=30
    ).stdout.decode()
    names = {line.strip() for line in out.splitlines()}
    return sorted(n for n in names if n and "/" not in n and n != "busybox")


def rootfs_entries(busybox: Path = BUSYBOX) -> list[Entry]:
    """The whole tree, parents before children, in a stable order."""
    entries = [
        Entry("bin", "dir", 0o755),
        Entry("bin/busybox", "file", 0o755, data=busybox.read_bytes()),
    ]
    entries += [
        Entry(f"bin/{name}", "symlink", 0o777, target="busybox")
        for name in busybox_applets(busybox)
    ]
    entries += [
        Entry("dev", "dir", 0o755),
        Entry("etc", "dir", 0o755),
        Entry("etc/group", "file", 0o644, data=GROUP.encode()),
        Entry("etc/passwd", "file", 0o644, data=PASSWD.encode()),
        Entry("proc", "dir", 0o555),
        Entry("root", "dir", 0o700),
        Entry("sys", "dir", 0o555),
        Entry("tmp", "dir", 0o1777),
    ]
    return entries


def make_rootfs_dir(path: Path) -> Path:
    """Write the image's tree as a plain directory at `path` (created; must be empty)."""
    path.mkdir(parents=True, exist_ok=True)
    if any(path.iterdir()):
        raise FileExistsError(f"{path} is not empty")
    for entry in rootfs_entries():
        dest = path / entry.path
        if entry.kind == "dir":
            dest.mkdir()
        elif entry.kind == "file":
            dest.write_bytes(entry.data)
        else:
            os.symlink(entry.target, dest)
            continue
        os.chmod(dest, entry.mode)  # explicit: mkdir and write_bytes obey the umask
    return path


def _layer_tar(entries: list[Entry]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.path)
            info.mode = entry.mode
            info.mtime = FIXED_MTIME
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if entry.kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif entry.kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = entry.target
                tar.addfile(info)
            else:
                info.size = len(entry.data)
                tar.addfile(info, io.BytesIO(entry.data))
    return buf.getvalue()


def _gzip(data: bytes) -> bytes:
    buf = io.BytesIO()
    # filename="" and mtime=0 keep the gzip header free of anything that changes between builds.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=6) as gz:
        gz.write(data)
    return buf.getvalue()


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _descriptor(media_type: str, blob: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": _sha256(blob), "size": len(blob), **extra}


def build_busybox_image(out_tar: Path, name: str, *, compress: bool = True) -> Path:
    """Write an OCI image layout tar for the busybox image called `name` to `out_tar`.

    `name` is a full reference such as "localhost/pyrunc/busybox:latest"; `ctr image import` takes
    it from the `io.containerd.image.name` annotation of the manifest in index.json.
    """
    return build_image(out_tar, name, rootfs_entries(), ["sh"], compress=compress)


def build_image(out_tar: Path, name: str, entries: list[Entry], cmd: list[str], *,
                compress: bool = True) -> Path:
    """Write an OCI image layout tar of one layer holding `entries`, run as `cmd`."""
    layer = _layer_tar(entries)
    layer_blob = _gzip(layer) if compress else layer
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": CREATED,
        "config": {"Env": [f"PATH={DEFAULT_PATH}"], "Cmd": cmd, "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [_sha256(layer)]},
        "history": [{"created": CREATED, "created_by": "pyrunc tests/support/image.py"}],
    }
    config_blob = _json(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": _descriptor(MEDIA_CONFIG, config_blob),
        "layers": [_descriptor(MEDIA_LAYER_GZIP if compress else MEDIA_LAYER_TAR, layer_blob)],
    }
    manifest_blob = _json(manifest)
    tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else "latest"
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [
            _descriptor(
                MEDIA_MANIFEST,
                manifest_blob,
                platform={"architecture": "amd64", "os": "linux"},
                annotations={
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": tag,
                },
            )
        ],
    }
    files: list[tuple[str, bytes]] = [
        ("oci-layout", _json({"imageLayoutVersion": "1.0.0"})),
        ("index.json", _json(index)),
    ]
    files += sorted(
        (f"blobs/sha256/{_sha256(blob).removeprefix('sha256:')}", blob)
        for blob in (layer_blob, config_blob, manifest_blob)
    )

    out_tar.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_tar.with_name(out_tar.name + ".tmp")
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for dirname in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(dirname)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, FIXED_MTIME
            tar.addfile(info)
        for path, data in files:
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), 0o644, FIXED_MTIME
            tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, out_tar)
    return out_tar


def image_digest(image_tar: Path) -> str:
    """The manifest digest recorded in an image tar's index.json."""
    with tarfile.open(image_tar) as tar:
        member = tar.extractfile("index.json")
        if member is None:
            raise ValueError(f"{image_tar} has no index.json")
        index = json.load(member)
    return str(index["manifests"][0]["digest"])
