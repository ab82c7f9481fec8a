"""What the warm parent does before forking so that shims copy fewer of its pages."""

from __future__ import annotations

import pytest

from pyrunc.shim import log as shimlog
from pyrunc.shim.warm import allocator_holes, fill_allocator_holes


def test_the_allocator_report_is_read_whole() -> None:
    holes = allocator_holes()
    # pymalloc's 32 size classes of 16 bytes; a class appears once it has a pool.
    assert holes and set(holes) <= {16 * (i + 1) for i in range(32)}
    assert all(count >= 0 for count in holes.values())


def test_filling_takes_up_the_free_blocks() -> None:
    # Make holes of one size class: objects of 192 bytes, every other one freed.
    made = [bytes(192 - 33) for _ in range(4000)]
    del made[::2]
    before = allocator_holes()[192]
    assert before >= 2000
    fillers = fill_allocator_holes()
    assert allocator_holes().get(192, 0) < 100  # what is left is in pools carved meanwhile
    assert len(fillers) >= before
    del made, fillers


def test_log_lines_carry_the_fields_and_the_level_of_the_last_setup(
        capfd: pytest.CaptureFixture[str]) -> None:
    # The warm parent sets the log up once; a forked shim sets it again with its own fields.
    try:
        shimlog.setup(debug=False, fields={})
        shimlog.setup(debug=False, fields={"namespace": "k8s.io"})
        shimlog.info("hello")
        shimlog.debug("hidden")
        shimlog.setup(debug=True, fields={"namespace": "other"})
        shimlog.debug("shown")
        lines = capfd.readouterr().err.splitlines()
    finally:
        shimlog.setup(debug=False, fields={})
    assert len(lines) == 2
    assert lines[0].endswith("level=info msg=hello namespace=k8s.io")
    assert lines[1].endswith("level=debug msg=shown namespace=other")


def test_a_step_that_only_saves_memory_cannot_stop_the_warm_parent(
        logged: list[tuple[int, str, bool]]) -> None:
    from pyrunc.shim.warm import best_effort

    def broken() -> int:
        raise OSError("no such file: true")

    assert best_effort("counting", lambda: 3) == 3
    assert best_effort("rehearsal", broken) is None
    # logged with its traceback, which names the error
    assert logged == [(shimlog.ERROR, "warm parent: rehearsal failed", True)]


@pytest.mark.parametrize("package", ["shim", "oci", "protos"])
def test_the_parents_name_changes_with_the_code_of_each_package(
        tmp_path: object, package: str) -> None:
    # A shim forked from a parent runs the parent's copy of all three packages: reinstalling a
    # changed oci/ must not leave `start` forking from a parent that still holds the old one.
    import os
    from pathlib import Path

    from pyrunc.shim.warm import code_stamp

    assert isinstance(tmp_path, Path)
    top = tmp_path / "pyrunc"
    for sub in ("shim", "oci", "protos"):
        (top / sub).mkdir(parents=True)
        (top / sub / "a.py").write_text("")
    module = top / package / "a.py"
    st = module.stat()
    # A source tree: the modules' mtimes.
    before = code_stamp(str(top), "1.0")
    os.utime(module, ns=(st.st_atime_ns, st.st_mtime_ns + 1000))
    assert code_stamp(str(top), "1.0") != before
    # Installed by pip: its RECORD (every file's hash) names the code, whatever the mtimes.
    record = tmp_path / "pyrunc-1.0.dist-info" / "RECORD"
    record.parent.mkdir()
    record.write_text(f"pyrunc/{package}/a.py,sha256=one,0\n")
    installed = code_stamp(str(top), "1.0")
    os.utime(module, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert code_stamp(str(top), "1.0") == installed
    record.write_text(f"pyrunc/{package}/a.py,sha256=two,0\n")
    assert code_stamp(str(top), "1.0") != installed


def test_the_installed_parents_name_comes_from_pips_record() -> None:
    import os

    import pyrunc.shim as package
    from pyrunc.shim.warm import code_stamp, identity

    top = os.path.dirname(os.path.dirname(os.path.abspath(package.__file__ or ".")))
    record = os.path.join(os.path.dirname(top), f"pyrunc-{package.__version__}.dist-info",
                          "RECORD")
    stamp = code_stamp(top, package.__version__)
    if os.path.exists(record):  # the installed package (CI); else a source tree
        with open(record, "rb") as f:
            assert stamp.endswith(f.read())
    assert len(identity()) == 16
