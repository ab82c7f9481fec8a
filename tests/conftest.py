"""Options and markers for the whole suite; nothing here starts a daemon."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.names import PYRUNC_RUNTIME, RUNTIMES

INTEGRATION_DIR = Path(__file__).parent / "integration"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--runtime",
        default=os.environ.get("PYRUNC_TEST_RUNTIME", PYRUNC_RUNTIME),
        help=(
            "runtime for integration tests that are not parametrized over runtimes "
            f"(default {PYRUNC_RUNTIME}, or $PYRUNC_TEST_RUNTIME); e.g. {RUNTIMES[1]} to check "
            "a test against the Go shim"
        ),
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Everything under tests/integration gets the marker, so `-m "not integration"` works.
    for item in items:
        if INTEGRATION_DIR in item.path.parents:
            item.add_marker(pytest.mark.integration)
