"""Errors as containerd's users see them, from pyrunc and from the Go shim side by side.

containerd passes a shim's error text on (`ctr: failed to create shim task: …`), and clients and
containerd's tooling match on parts of it, such as the runc binary's name in double quotes. So a
runc that cannot be started must read the same from both shims: os/exec's
`exec: "no-runc": executable file not found in $PATH`, not Python's `[Errno 2] …: 'no-runc'`.

ctr hands BinaryName over as runc options (`--runc-binary`) only to a runtime named
io.containerd.runc.v2; any other runtime gets it from a runtime config file
(`--runtime-config-path`), as CRI configures non-runc runtimes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import IMAGE, both_runtimes, unique_id
from tests.support import RUNC_RUNTIME, Containerd, shim_binary
from tests.support.containerd import TASK_PLUGIN

NOT_FOUND = 'exec: "no-runc": executable file not found in $PATH'


def binary_name_options(runtime: str, tmp_path: Path, binary: str) -> list[str]:
    """The ctr flags that make `binary` the runtime's runc."""
    if runtime == RUNC_RUNTIME:
        return ["--runc-binary", binary]
    config = tmp_path / "runtime.toml"
    config.write_text(f"BinaryName = {json.dumps(binary)}\n")
    return ["--runtime-config-path", str(config)]


@both_runtimes
def test_a_runc_binary_that_does_not_exist_fails_create_in_the_go_shims_words(
        containerd: Containerd, runtime: str, tmp_path: Path) -> None:
    id = unique_id("norunc")
    try:
        result = containerd.ctr("run", "--rm", "--runtime", runtime,
                                *binary_name_options(runtime, tmp_path, "no-runc"),
                                IMAGE, id, "true", check=False)
    finally:
        containerd.remove(id)
    bundle = containerd.state / TASK_PLUGIN / containerd.namespace / id
    stderr = result.stderr.decode()
    assert result.returncode != 0
    assert stderr.startswith("ctr: failed to create shim task: "), stderr
    assert "OCI runtime create failed: " in stderr, stderr
    # The Go shim's runtimeError: runc never ran, so its log cannot be read either. The code
    # is Unknown: containerd before 2.0 says so at the end, 2.x says nothing.
    explained = stderr.split("OCI runtime create failed: ", 1)[1].removesuffix("\n")
    assert explained.removesuffix(": unknown") == (
        "unable to retrieve OCI runtime error "
        f"(open {bundle}/log.json: no such file or directory): {NOT_FOUND}"
    ), stderr


@both_runtimes
@pytest.mark.parametrize("scheme", ["binary", "file"])
def test_a_log_uri_that_cannot_be_used_fails_create_in_the_go_shims_words(
        containerd: Containerd, runtime: str, tmp_path: Path, scheme: str) -> None:
    blocker = tmp_path / "a-file"  # where the logger's or the log's directory should be
    blocker.write_text("")
    uri = f"{scheme}://{blocker}/" + ("logger" if scheme == "binary" else "ctr.log")
    expected = {
        # the Go shim's NewBinaryIO, and os/exec under it
        "binary": f"failed to start binary process: fork/exec {blocker}/logger: "
                  "not a directory",
        # Go's MkdirAll of the log's directory
        "file": f"failed to create init process I/O: mkdir {blocker}: not a directory",
    }[scheme]
    id = unique_id("badlog")
    try:
        result = containerd.ctr("run", "--rm", "--runtime", runtime, "--log-uri", uri,
                                IMAGE, id, "true", check=False)
    finally:
        containerd.remove(id)
    stderr = result.stderr.decode()
    assert result.returncode != 0
    assert stderr.startswith("ctr: failed to create shim task: "), stderr
    assert expected in stderr, stderr


def daemon_path(containerd: Containerd) -> str:
    """The PATH containerd runs its shims with, where it finds them and they find runc."""
    environ = Path(f"/proc/{containerd.pid}/environ").read_bytes().split(b"\0")
    return next(v[5:].decode() for v in environ if v.startswith(b"PATH="))


@both_runtimes
def test_delete_after_a_shim_names_the_missing_runc_as_go_does(
        containerd: Containerd, runtime: str, tmp_path: Path) -> None:
    """`<shim> delete`, as containerd runs it after a shim is gone, for a bundle whose runc
    (saved at Create) no longer exists while runc's state for the container still does."""
    id = unique_id("delnorunc")
    bundle = tmp_path / id  # the Go shim finds the bundle as <cwd>/../<id>
    bundle.mkdir()
    root = tmp_path / "runc-root"
    (root / containerd.namespace / id).mkdir(parents=True)
    (bundle / "options.json").write_text(json.dumps({"binary_name": "no-runc",
                                                     "root": str(root)}))
    (bundle / "runtime").write_text("no-runc")  # both shims write both files at Create
    path = daemon_path(containerd)
    shim = shutil.which(shim_binary(runtime), path=path)
    assert shim, f"{shim_binary(runtime)} not on {path}"
    result = subprocess.run(
        [shim, "-namespace", containerd.namespace, "-address", containerd.address,
         "-publish-binary", containerd.containerd_binary, "-id", id, "-bundle", str(bundle),
         "delete"],
        cwd=bundle, env={"PATH": path}, capture_output=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout  # the DeleteResponse
    # logrus quotes the Go shim's error="…", escaping its quotes.
    warnings = result.stderr.decode().replace('\\"', '"')
    assert "failed to remove runc container" in warnings, warnings
    assert NOT_FOUND in warnings, warnings
