"""The one reaper: spawned children and re-parented processes, exits never lost."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator

from pyrunc.shim.reaper import Reaper
from pyrunc.shim.spawn import exit_status


def test_exit_status_is_the_shells() -> None:
    assert exit_status(3 << 8) == 3
    assert exit_status(signal.SIGKILL) == 137


@contextlib.contextmanager
def reaping() -> Iterator[Reaper]:
    """A reaper driven by a thread of its own (the shim drives it from SIGCHLD instead)."""
    reaper = Reaper()
    reaper.install(subreaper=False)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            reaper.reap()
            stop.wait(0.005)

    thread = threading.Thread(target=loop, name="test-reaper")
    thread.start()
    try:
        yield reaper
    finally:
        stop.set()
        thread.join()


def test_spawned_child_exit_and_output() -> None:
    with reaping() as reaper:
        r, w = os.pipe()
        try:
            _, exited = reaper.spawn(["sh", "-c", "echo hi >&3; exit 4"], extra_fds=[w])
            os.close(w)
            exit = exited.wait(5)
            assert exit is not None
            assert (exit.status, os.read(r, 100)) == (4, b"hi\n")
        finally:
            os.close(r)


def test_exit_reaped_before_anyone_asked_is_kept_for_the_claimant() -> None:
    with reaping() as reaper:
        pid = os.posix_spawnp("sh", ["sh", "-c", "exit 9"], dict(os.environ))
        time.sleep(0.3)  # reaped meanwhile, unclaimed
        exit = reaper.watch(pid).wait(5)
        assert exit is not None and exit.status == 9


def test_stale_exit_older_than_the_claim_is_not_delivered() -> None:
    with reaping() as reaper:
        pid = os.posix_spawnp("true", ["true"], dict(os.environ))
        time.sleep(0.3)
        watch = reaper.watch(pid, since_ns=time.time_ns())
        assert watch.wait(0.05) is None
        assert not watch.done()


def test_children_do_not_inherit_ignored_signals() -> None:
    with reaping() as reaper:
        # Python ignores SIGPIPE; a child must get the default action back.
        _, exited = reaper.spawn(["sh", "-c", "kill -PIPE $$; exit 0"])
        exit = exited.wait(5)
        assert exit is not None and exit.status == 128 + signal.SIGPIPE


def test_children_do_not_inherit_blocked_signals() -> None:
    # The shim blocks SIGCHLD and SIGTERM in all its threads (they are taken with sigwait); a
    # child must start with an empty mask, or `sleep` would not die of SIGTERM.
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        with reaping() as reaper:
            pid, exited = reaper.spawn(["sleep", "10"])
            time.sleep(0.1)
            os.kill(pid, signal.SIGTERM)
            exit = exited.wait(5)
            assert exit is not None and exit.status == 128 + signal.SIGTERM
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def test_many_waiters_of_one_pid_and_many_children_at_once() -> None:
    with reaping() as reaper:
        spawned = [reaper.spawn(["sh", "-c", f"sleep 0.5; exit {i}"]) for i in range(20)]
        extra = [reaper.watch(pid) for pid, _ in spawned]
        for i, ((_, exited), again) in enumerate(zip(spawned, extra, strict=True)):
            first, second = exited.wait(5), again.wait(5)
            assert first is not None and first.status == i
            assert second is first
