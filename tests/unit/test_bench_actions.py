"""The actions measure of bench/run.py: `start` and `delete` against the interpreter's floor, the
interval of a difference of medians, the rows and their target, and a run that leaves nothing."""

from __future__ import annotations

import os
import random
import signal
import socket
import statistics
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.run import (
    ACTION_TARGET_MS,
    ACTION_WARMUP_RUNS,
    MEASURES,
    action_rows,
    alive,
    bootstrap_difference_ci,
    bootstrap_ratio_ci,
    floor_markdown_table,
    floor_table,
    interpreter_of,
    parse_args,
    prepare_bundle,
    stop_listener,
    tear_down_bundle,
    time_actions,
    timed_process,
)


def noisy(center: float, n: int, seed: int, spread: float = 0.1) -> list[float]:
    rng = random.Random(seed)
    return [center * (1 + rng.uniform(-spread, spread)) for _ in range(n)]


# ---- the interval of a difference ----------------------------------------------------------


def test_identical_samples_give_the_difference_itself() -> None:
    assert bootstrap_difference_ci([0.009] * 50, [0.006] * 50) == pytest.approx((0.003, 0.003))
    assert bootstrap_difference_ci([2.0], [3.0]) == (-1.0, -1.0)


def test_the_interval_holds_the_difference_of_the_medians() -> None:
    action, floor = noisy(0.0085, 200, 1, 0.05), noisy(0.0064, 200, 2, 0.05)
    low, high = bootstrap_difference_ci(action, floor) or (0.0, 0.0)
    assert low <= statistics.median(action) - statistics.median(floor) <= high
    assert 0.0015 < low < high < 0.0027
    # The same distribution on both sides: an interval around zero.
    low, high = bootstrap_difference_ci(noisy(0.0064, 200, 3), noisy(0.0064, 200, 4)) or (0, 0)
    assert low < 0.0 < high


def test_the_difference_is_seeded_and_no_interval_without_samples() -> None:
    a, b = noisy(0.008, 40, 5), noisy(0.006, 40, 6)
    assert bootstrap_difference_ci(a, b) == bootstrap_difference_ci(a, b)
    assert bootstrap_difference_ci(a, b, 500, seed=1) != bootstrap_difference_ci(a, b, 500, seed=2)
    assert bootstrap_difference_ci([], [0.1]) is None
    assert bootstrap_difference_ci([0.1], []) is None
    # A difference may involve a zero or a negative figure; a ratio may not.
    assert bootstrap_difference_ci([0.0], [0.1]) == (-0.1, -0.1)
    assert bootstrap_ratio_ci([0.0], [0.1]) is None


def test_the_ratio_interval_is_the_same_as_before_the_difference_shared_its_code() -> None:
    # Figures of the first implementation (seed 10, 10 000 resamples): a run's JSON made with it
    # must give the same table when remade now.
    a, b = [0.1 + 0.001 * i for i in range(40)], [0.11 + 0.0012 * i for i in range(40)]
    assert bootstrap_ratio_ci(a, b) == (0.8321325648414986, 0.9621451104100947)


# ---- the rows -------------------------------------------------------------------------------


def sample(what: str, ms: float, **extra: Any) -> dict[str, Any]:
    return {"what": what, "seconds": ms / 1000, "ok": True, "warmup": False, **extra}


def fake_actions(start_ms: float, delete_ms: float, floor_ms: float = 6.4) -> dict[str, Any]:
    samples = [sample("floor", 50.0, warmup=True), sample("start", 90.0, warmup=True,
                                                           forked=True)]
    for i, (f, s, d) in enumerate(zip(noisy(floor_ms, 100, 7, 0.03),
                                      noisy(start_ms, 100, 8, 0.03),
                                      noisy(delete_ms, 100, 9, 0.03), strict=True)):
        samples += [sample("floor", f, round=i), sample("start", s, round=i, forked=True),
                    sample("delete", d, round=i)]
    samples.append(sample("start", 25.0, forked=False))  # served the slow way: apart
    samples.append({**sample("delete", 99.0), "ok": False})  # a failed run does not count
    return {"options": {"only": ["actions"]},
            "actions": {"samples": samples, "slow_starts": {"runs": 1, "median": 0.025}}}


def rows_by_key(result: dict[str, Any]) -> dict[str, Any]:
    return {r.key: r for r in action_rows(result)}


def test_each_action_is_held_against_the_floor_by_the_upper_end_of_its_interval() -> None:
    got = rows_by_key(fake_actions(start_ms=8.4, delete_ms=10.0))
    start, delete = got["start_minus_floor"], got["delete_minus_floor"]
    assert start.samples == (100, 100) and delete.samples == (100, 100)
    assert start.target == delete.target == ACTION_TARGET_MS == 3.0
    assert start.ci95 is not None and start.ci95[0] <= start.ms <= start.ci95[1]
    assert start.ms == pytest.approx(2.0, abs=0.3) and start.met is True
    assert delete.ms == pytest.approx(3.6, abs=0.3) and delete.met is False
    assert start.compared == start.ci95[1]
    # The medians themselves are shown for information; the slow way apart, not counted.
    assert got["floor_median"].target is None and got["floor_median"].samples == (100,)
    assert got["start_slow_median"].ms == 25.0
    assert got["start_action_median"].samples == (100,)


def test_a_median_under_the_target_with_an_interval_over_it_is_not_met() -> None:
    from bench.run import FloorRow

    row = FloorRow("start_minus_floor", "start action − floor", 2.9, (200, 200),  # noqa: RUF001
                   ci95=(2.7, 3.1), target=3.0)
    assert row.met is False
    assert FloorRow("k", "n", 2.9, (1, 1), ci95=(2.7, 2.95), target=3.0).met is True
    assert FloorRow("k", "n", None, (0, 0), target=3.0).met is None


def test_no_rows_without_the_measure_and_failed_rows_without_samples() -> None:
    assert action_rows({"options": {"only": ["start"]}}) == []
    got = rows_by_key({"options": {"only": ["actions"]}, "actions": {"samples": []}})
    assert got["start_minus_floor"].ms is None and got["start_minus_floor"].ci95 is None
    assert got["start_minus_floor"].cells()[1] == "failed"
    assert "start_slow_median" not in got


def test_the_tables_name_the_differences_with_their_interval_and_target() -> None:
    floor_rows = action_rows(fake_actions(start_ms=8.4, delete_ms=7.0))
    text = floor_table(floor_rows)
    lines = text.splitlines()
    assert lines[0].split(" | ")[0].strip() == "measure"
    start = next(line for line in lines if line.startswith("start action − floor"))  # noqa: RUF001
    row = next(r for r in floor_rows if r.key == "start_minus_floor")
    assert row.ci95 is not None
    assert f"[{row.ci95[0]:.2f}, {row.ci95[1]:.2f}]" in start
    assert "≤ 3 ms" in start and start.rstrip().endswith("yes")
    md = floor_markdown_table(floor_rows)
    assert len({line.count("|") for line in md.splitlines()}) == 1
    assert any("delete action − floor" in line for line in md.splitlines())  # noqa: RUF001


def test_the_measure_is_run_by_default_and_quick_makes_it_short() -> None:
    assert "actions" in MEASURES
    args = parse_args([])
    assert "actions" in args.only and args.action_runs == 200
    assert parse_args(["--quick"]).action_runs == 30
    assert parse_args(["--only", "actions", "--action-runs", "7"]).action_runs == 7
    with pytest.raises(SystemExit):
        parse_args(["--action-runs", "0"])


# ---- the processes --------------------------------------------------------------------------


def test_the_floor_is_the_interpreter_the_launcher_starts(tmp_path: Path) -> None:
    launcher = tmp_path / "containerd-shim-pyrunc-v1"
    launcher.write_text("#!/opt/pyrunc/bin/python -IS\nimport sys\n")
    assert interpreter_of(str(launcher)) == "/opt/pyrunc/bin/python"
    binary = tmp_path / "go-shim"
    binary.write_bytes(b"\x7fELF\x02\x01\x01")
    assert interpreter_of(str(binary)) == sys.executable


def test_a_timed_process_runs_in_its_directory_with_its_environment(tmp_path: Path) -> None:
    code = "import os, sys; print(os.getcwd(), os.environ['X']); sys.stderr.write('e'); exit(3)"
    seconds, status, output = timed_process([sys.executable, "-c", code], str(tmp_path),
                                            {"X": "y"})
    assert status == 3
    assert output == f"{tmp_path} y\ne".encode()
    assert 0 < seconds < 10


def listening_child(path: Path) -> int:
    """A process (not our child) listening on `path`, as a shim forked by a warm parent."""
    r, w = os.pipe()
    if os.fork() == 0:  # the first child forks the listener and exits: init adopts it
        os.close(r)
        if os.fork() == 0:
            sock = socket.socket(socket.AF_UNIX)
            sock.bind(str(path))
            sock.listen()
            os.write(w, str(os.getpid()).encode())
            os.close(w)
            try:
                signal.pause()
            finally:
                os._exit(0)
        os._exit(0)
    os.close(w)
    os.wait()
    with os.fdopen(r) as f:
        return int(f.read())


def test_stop_listener_ends_what_start_left_serving(tmp_path: Path) -> None:
    path = tmp_path / "shim.sock"
    pid = listening_child(path)
    assert alive(pid)
    stopped = stop_listener(str(path))
    assert stopped == {"shims": [pid], "forked": False}  # not forked by a warm parent
    assert not alive(pid)
    assert not path.exists()
    assert stop_listener(str(path)) == {"shims": [], "forked": False}  # nothing: nothing done


def test_the_bundles_are_as_containerd_and_a_teardown_leave_them(
        tmp_path: Path, capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    from pyrunc.oci import bundle
    from pyrunc.shim import manager
    from pyrunc.shim.runc_shim import SHIM

    path = tmp_path / "c1"
    prepare_bundle(path, b'{"ociVersion": "1.0.2"}')
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "log", "rootfs"]
    tear_down_bundle(path)
    assert bundle.read_options_raw(str(path)) == {}  # default options: not even parsed
    assert bundle.read_runtime(str(path)) == "runc"
    # delete finds nothing to do there, and says so with nothing but its response.
    assert manager.delete(SHIM, namespace="ns", id="c1", bundle=str(path), debug=False) == 0
    out, err = capfdbinary.readouterr()
    assert err == b"" and out.startswith(b"\x08\x92\x21")  # pid 4242


STUB = """#!{python}
# A stand-in for the shim binary: `start` leaves a process serving the socket, as a warm
# parent's shim does; `delete` prints a DeleteResponse.
import os, signal, socket, sys
if sys.argv[-1] == "delete":
    sys.stdout.buffer.write(b"\\x10\\x89\\x01")
    sys.exit(0)
cid = sys.argv[sys.argv.index("-id") + 1]
path = {sockets!r} + "/" + cid
sock = socket.socket(socket.AF_UNIX)
sock.bind(path)
sock.listen()
if os.fork() == 0:
    os.setsid()
    for fd in (0, 1, 2):
        os.dup2(os.open(os.devnull, os.O_RDWR), fd)
    signal.pause()
print("unix://" + path, flush=True)
"""


def test_a_run_times_each_kind_and_leaves_nothing_behind(tmp_path: Path) -> None:
    sockets = tmp_path / "s"
    sockets.mkdir()
    binary = tmp_path / "containerd-shim-stub-v1"
    binary.write_text(STUB.format(python=sys.executable, sockets=str(sockets)))
    binary.chmod(0o755)
    ids = iter(range(1000))
    work = tmp_path / "bundles"
    result = time_actions(
        str(binary), 3, address="/run/x.sock", namespace="ns", publish_binary="/bin/true",
        env={"PATH": os.environ.get("PATH", "")}, spec=b"{}", workdir=work,
        new_id=lambda: f"c{next(ids)}", socket_path=lambda cid: f"{sockets}/{cid}",
        warm_parent_wait=0.5,
    )
    assert "error" not in result, result["error"]
    samples = result["samples"]
    # The stub's shims are nobody's warm parent's: the warm-ups go on for a while, hoping for
    # one, and then every start counts as the slow way.
    rounds = {s["round"] for s in samples}
    assert len(rounds) >= ACTION_WARMUP_RUNS + 3
    assert [s["what"] for s in samples[:3]] == ["floor", "start", "delete"]
    assert [s["what"] for s in samples[3:6]] == ["start", "floor", "delete"]
    assert all(s["ok"] for s in samples)
    assert result["summary"]["floor"]["runs"] == 3 and result["summary"]["delete"]["runs"] == 3
    assert result["summary"]["start"] == {"runs": 0} and result["slow_starts"]["runs"] == 3
    assert result["floor_argv"] == [sys.executable, "-I", "-S", "-c", "pass"]
    starts = [s for s in samples if s["what"] == "start"]
    assert all(len(s["shims"]) == 1 and not alive(s["shims"][0]) for s in starts)
    assert not work.exists() and list(sockets.iterdir()) == []
