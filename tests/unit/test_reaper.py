"""The one reaper: spawned children and re-parented processes, exits never lost."""

from __future__ import annotations

import asyncio
import os
import signal

from pyrunc.shim.reaper import Reaper
from pyrunc.shim.spawn import exit_status


def test_exit_status_is_the_shells() -> None:
    assert exit_status(3 << 8) == 3
    assert exit_status(signal.SIGKILL) == 137


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_spawned_child_exit_and_output() -> None:
    async def scenario() -> tuple[int, bytes]:
        reaper = Reaper(asyncio.get_running_loop())
        reaper.install(subreaper=False)
        r, w = os.pipe()
        try:
            _, exited = reaper.spawn(["sh", "-c", "echo hi >&3; exit 4"], extra_fds=[w])
            os.close(w)
            status = (await asyncio.wait_for(exited, 5)).status
            return status, os.read(r, 100)
        finally:
            os.close(r)
            reaper.uninstall()

    assert run(scenario()) == (4, b"hi\n")


def test_exit_reaped_before_anyone_asked_is_kept_for_the_claimant() -> None:
    async def scenario() -> int:
        reaper = Reaper(asyncio.get_running_loop())
        reaper.install(subreaper=False)
        try:
            pid = os.posix_spawnp("sh", ["sh", "-c", "exit 9"], dict(os.environ))
            await asyncio.sleep(0.3)  # reaped meanwhile, unclaimed
            return (await asyncio.wait_for(reaper.watch(pid), 5)).status
        finally:
            reaper.uninstall()

    assert run(scenario()) == 9


def test_stale_exit_older_than_the_claim_is_not_delivered() -> None:
    async def scenario() -> bool:
        reaper = Reaper(asyncio.get_running_loop())
        reaper.install(subreaper=False)
        try:
            pid = os.posix_spawnp("true", ["true"], dict(os.environ))
            await asyncio.sleep(0.3)
            import time

            fut = reaper.watch(pid, since_ns=time.time_ns())
            await asyncio.sleep(0.05)
            return fut.done()
        finally:
            reaper.uninstall()

    assert run(scenario()) is False


def test_children_do_not_inherit_ignored_signals() -> None:
    async def scenario() -> int:
        reaper = Reaper(asyncio.get_running_loop())
        reaper.install(subreaper=False)
        try:
            # Python ignores SIGPIPE; a child must get the default action back.
            _, exited = reaper.spawn(["sh", "-c", "kill -PIPE $$; exit 0"])
            return (await asyncio.wait_for(exited, 5)).status
        finally:
            reaper.uninstall()

    assert run(scenario()) == 128 + signal.SIGPIPE
