"""Options and markers for the whole suite; nothing here starts a daemon."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.names import CONTAINERD_VERSION, DROP_IN, PYRUNC_RUNTIME, RUNC_RUNTIME

INTEGRATION_DIR = Path(__file__).parent / "integration"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--runtime",
        default=os.environ.get("PYRUNC_TEST_RUNTIME", PYRUNC_RUNTIME),
        help=(
            "runtime for integration tests that are not parametrized over runtimes "
            f"(default {PYRUNC_RUNTIME}, or $PYRUNC_TEST_RUNTIME); e.g. {RUNC_RUNTIME} to check "
            "a test against the Go shim"
        ),
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Everything under tests/integration gets the marker, so `-m "not integration"` works.
    for item in items:
        if INTEGRATION_DIR in item.path.parents:
            item.add_marker(pytest.mark.integration)


def pytest_report_header(config: pytest.Config) -> str:
    """Which lane this run is: the containerd of the integration tests, and who serves what."""
    if DROP_IN:
        served = f"pyrunc installed as containerd-shim-runc-v2 serves {PYRUNC_RUNTIME}"
    else:
        served = f"pyrunc serves {PYRUNC_RUNTIME}, the Go shim {RUNC_RUNTIME}"
    return f"pyrunc lane: containerd {CONTAINERD_VERSION}; {served}"
