"""Fixtures shared by the unit tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def logged(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str, bool]]:
    """What the shim's log (pyrunc.shim.log) was asked to write while the test ran, whatever
    its level: (level, message, with the exception's traceback)."""
    from pyrunc.shim import log

    lines: list[tuple[int, str, bool]] = []

    def record(at: int, msg: str, args: tuple[object, ...] = (), exc_info: bool = False) -> None:
        lines.append((at, msg % args if args else msg, exc_info))

    monkeypatch.setattr(log, "emit", record)
    return lines
