"""The shim's own logger (pyrunc.shim.log), and oci/'s, which hands its lines to it."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import pytest

from pyrunc.oci import log as oci_log
from pyrunc.shim import log

LINE = re.compile(r'time="(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z)" level=(\w+) msg=(.*)$')


@pytest.fixture
def fields() -> Iterator[None]:
    log.setup(debug=False, fields={"runtime": "io.containerd.pyrunc.v1", "namespace": "k8s.io"})
    try:
        yield
    finally:
        log.setup(debug=False, fields={})


def test_a_line_is_logrus_text_with_the_fields_last(
        fields: None, capfd: pytest.CaptureFixture[str]) -> None:
    log.info("container %s: created, pid %d", "c1", 42)
    log.warning("plain")
    first, second = capfd.readouterr().err.splitlines()
    match = LINE.match(first)
    assert match, first
    assert match.group(2) == "info"
    assert match.group(3) == ('"container c1: created, pid 42" runtime=io.containerd.pyrunc.v1 '
                              "namespace=k8s.io")
    assert LINE.match(second) and " level=warning msg=plain runtime=" in second


def test_quotes_backslashes_and_newlines_are_escaped_as_logrus_does() -> None:
    assert log.quote("a/b-c_d.e:f") == "a/b-c_d.e:f"
    assert log.quote("") == '""'
    assert log.quote('say "hi"\\\nbye') == '"say \\"hi\\"\\\\\\nbye"'


def test_an_exception_comes_with_its_traceback_on_the_same_line(
        fields: None, capfd: pytest.CaptureFixture[str]) -> None:
    try:
        raise OSError("runc went away")
    except OSError:
        log.exception("Create failed")
    (line,) = capfd.readouterr().err.splitlines()
    assert " level=error msg=\"Create failed\\nTraceback (most recent call last):\\n" in line
    assert line.endswith('OSError: runc went away" runtime=io.containerd.pyrunc.v1 '
                         "namespace=k8s.io")


def test_a_mistaken_log_call_is_written_as_it_is_and_raises_nothing(
        capfd: pytest.CaptureFixture[str]) -> None:
    log.info("%d containers", "three")
    (line,) = capfd.readouterr().err.splitlines()
    assert "'%d containers' % ('three',)" in line


def test_below_the_level_nothing_is_formatted_or_written(
        capfd: pytest.CaptureFixture[str]) -> None:
    class Loud:
        def __str__(self) -> str:
            raise AssertionError("formatted")

    log.debug("%s", Loud())
    log.trace("%s", Loud())
    assert capfd.readouterr().err == ""


def test_a_line_nobody_reads_is_dropped_quietly() -> None:
    # containerd down: the log fifo has no reader, and write(2) fails with EPIPE.
    read_end, write_end = os.pipe()
    os.close(read_end)
    saved = os.dup(2)
    try:
        os.dup2(write_end, 2)
        log.error("nobody hears this")
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(write_end)


def test_oci_lines_reach_the_shims_log_once_the_runc_shim_is_loaded(
        fields: None, capfd: pytest.CaptureFixture[str]) -> None:
    import pyrunc.shim.task  # noqa: F401 -- it hands oci/ the shim's log

    oci_log.info("container %s: exec %s exited", "c1", "e1")
    oci_log.debug("below the shim's level")
    (line,) = capfd.readouterr().err.splitlines()
    assert LINE.match(line) and 'level=info msg="container c1: exec e1 exited" runtime=' in line


def test_oci_used_alone_writes_warnings_plainly(capfd: pytest.CaptureFixture[str]) -> None:
    sink = oci_log._sink
    oci_log.use(oci_log._plain)
    try:
        oci_log.info("not shown")
        oci_log.warning("relay %s stopped", "stdout")
    finally:
        oci_log.use(sink)
    assert capfd.readouterr().err == "warning: relay stdout stopped\n"
