"""The launcher that starts the shim binary without `site`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pyrunc.shim import launcher


def test_the_launcher_starts_the_interpreter_isolated_without_site() -> None:
    text = launcher.launcher_text("/opt/pyrunc/bin/python", ["/opt/pyrunc/lib/site-packages"])
    first, *rest = text.splitlines()
    assert first == "#!/opt/pyrunc/bin/python -IS"  # one argument: the kernel passes one
    assert "sys.path += ['/opt/pyrunc/lib/site-packages']" in rest
    assert "from pyrunc.shim.runc_shim import main" in rest  # setup.cfg's entry point
    compile(text, "launcher", "exec")


@pytest.mark.parametrize("executable", ["/opt/py runc/python", "/" + "x" * 260])
def test_an_interpreter_a_shebang_cannot_name_is_refused(executable: str) -> None:
    with pytest.raises(ValueError):
        launcher.launcher_text(executable, [])


def test_site_paths_are_what_site_adds() -> None:
    paths = launcher.site_paths()
    assert paths and all(p in sys.path for p in paths)
    assert all("site-packages" in p or "dist-packages" in p for p in paths)


def test_a_written_launcher_runs_the_shim(tmp_path: Path) -> None:
    target = tmp_path / launcher.SCRIPT
    assert launcher.main([str(target)]) == 0
    assert target.stat().st_mode & 0o777 == 0o755
    out = subprocess.run([str(target), "-v"], capture_output=True, text=True, timeout=30,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Runtime: io.containerd.pyrunc.v1" in out.stdout
    assert [p.name for p in tmp_path.iterdir()] == [launcher.SCRIPT]  # no temporary file left


def test_a_launcher_linked_under_another_name_answers_as_that_runtime(tmp_path: Path) -> None:
    """The kernel hands a `#!` interpreter the path it was asked to run, so sys.argv[0] is the
    link's, and the name there is the runtime's (an operator's drop-in for the Go shim)."""
    target = tmp_path / "bin" / launcher.SCRIPT
    target.parent.mkdir()
    assert launcher.main([str(target)]) == 0
    link = tmp_path / "containerd-shim-foo-v3"
    link.symlink_to(target)
    out = subprocess.run([str(link), "-v"], capture_output=True, text=True, timeout=30,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "containerd-shim-foo-v3:"
    assert "Runtime: io.containerd.foo.v3" in out.stdout
    plain = subprocess.run([sys.executable, "-m", "pyrunc.shim", "-v"], capture_output=True,
                           text=True, timeout=30, check=True)
    assert "Runtime: io.containerd.pyrunc.v1" in plain.stdout  # python -m: the default name
