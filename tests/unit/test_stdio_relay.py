"""The relay between pipes and fifos: whole data, EOF, full destinations."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from pyrunc.oci.stdio import relay


def test_relay_moves_everything_through_a_slow_reader() -> None:
    async def scenario() -> tuple[int, bytes, bytes]:
        src_r, src_w = os.pipe2(os.O_NONBLOCK)
        dst_r, dst_w = os.pipe2(os.O_NONBLOCK)
        payload = os.urandom(3 << 20)
        received = bytearray()

        async def write_all() -> None:
            view = memoryview(payload)
            while view:
                try:
                    view = view[os.write(src_w, view[:65536]):]
                except BlockingIOError:
                    await asyncio.sleep(0.001)
            os.close(src_w)

        async def read_all() -> None:  # slower than the writer: the relay must wait for room
            while True:
                try:
                    chunk = os.read(dst_r, 20000)
                except BlockingIOError:
                    await asyncio.sleep(0.001)
                    continue
                if not chunk:
                    return
                received.extend(chunk)

        async def relay_and_close() -> int:
            try:
                return await relay(src_r, dst_w)
            finally:
                os.close(dst_w)  # EOF for the reader

        total, _, _ = await asyncio.wait_for(
            asyncio.gather(relay_and_close(), write_all(), read_all()), 60
        )
        os.close(src_r)
        os.close(dst_r)
        return total, payload, bytes(received)

    total, sent, received = asyncio.run(scenario())
    assert total == len(sent) == 3 << 20
    assert received == sent


def test_relay_into_a_regular_file(tmp_path: Path) -> None:
    async def scenario() -> bytes:
        src_r, src_w = os.pipe2(os.O_NONBLOCK)
        target = tmp_path / "out"
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.write(src_w, b"first\n")
        os.close(src_w)
        await asyncio.wait_for(relay(src_r, fd), 5)
        os.close(fd)
        os.close(src_r)
        return target.read_bytes()

    assert asyncio.run(scenario()) == b"first\n"
