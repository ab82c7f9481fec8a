"""The smallest shim built on pyrunc's framework, for test_framework.py: a Task service that
answers Connect and Shutdown, grouping every container into one shim, and a delete hook that
reports a pid. It imports only the framework's public modules (api, cli, ttrpc) and protos."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pyrunc.protos import empty_pb2, shim_pb2
from pyrunc.shim.api import Shim, ShimContext
from pyrunc.shim.ttrpc.server import CallContext, Method


class MinimalShim(Shim):
    runtime = "io.containerd.minimal.v1"
    module = "tests.unit.minimal_shim"
    summary = "a shim that only answers Connect and Shutdown"

    def services(self, ctx: ShimContext) -> Mapping[str, Mapping[str, Method]]:
        def connect(req: Any, call: CallContext) -> shim_pb2.ConnectResponse:
            return shim_pb2.ConnectResponse(shim_pid=os.getpid(), version=ctx.runtime)

        def shutdown(req: Any, call: CallContext) -> empty_pb2.Empty:
            ctx.shutdown()
            return empty_pb2.Empty()

        methods = {"Connect": Method(shim_pb2.ConnectRequest, connect),
                   "Shutdown": Method(shim_pb2.ShutdownRequest, shutdown)}
        return {"containerd.task.v2.Task": methods}

    def group(self, bundle: str, id: str) -> str:
        return "all"

    def delete(self, namespace: str, id: str, bundle: str) -> int:
        return 4242


SHIM = MinimalShim()


def main() -> None:
    from pyrunc.shim.cli import main as run

    run(SHIM)


if __name__ == "__main__":
    main()
