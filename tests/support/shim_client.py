"""Talking to a container's shim directly, for what `ctr` cannot reach (Update, raw RPCs).

The shim's address is in the bundle's `address` file, as containerd reads it; calls carry the
namespace metadata containerd sends.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support.containerd import Containerd


def bundle_of(ctd: Containerd, container_id: str) -> Path:
    return ctd.state / "io.containerd.runtime.v2.task" / ctd.namespace / container_id


def shim_address(ctd: Containerd, container_id: str) -> tuple[str, int]:
    """The shim's address and the version of the Task API containerd speaks to it (2 or 3).

    containerd 2.x keeps what `start` printed in bootstrap.json (the 2.x Go shim writes no
    `address` file, and serves only task v3); 1.6 and 1.7 read the `address` file (task v2)."""
    bundle = bundle_of(ctd, container_id)
    try:
        params = json.loads((bundle / "bootstrap.json").read_text())
    except FileNotFoundError:
        return (bundle / "address").read_text().strip(), 2
    return str(params["address"]), int(params.get("version", 2))


def call(ctd: Containerd, container_id: str, method: str, request: Any,
         service: str = "", timeout: float = 30) -> Any:
    """One Task RPC to the shim serving container_id; raises TTRPCError on an error status.
    The service is the Task API version containerd itself uses with that shim, unless given."""
    from pyrunc.protos import shim_pb2

    address, version = shim_address(ctd, container_id)
    service = service or f"containerd.task.v{version}.Task"
    descriptor = shim_pb2.DESCRIPTOR.services_by_name["Task"].methods_by_name[method]
    if descriptor.output_type.full_name == "google.protobuf.Empty":
        from google.protobuf import empty_pb2

        response_type: Any = empty_pb2.Empty
    else:
        response_type = getattr(shim_pb2, descriptor.output_type.name)

    from pyrunc.shim.ttrpc.client import Client

    with Client.connect(address, timeout=5) as client:
        return client.call(
            service, method, request, response_type, timeout=timeout,
            metadata={"containerd-namespace-ttrpc": ctd.namespace},
        )
