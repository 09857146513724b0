"""Half-open gRPC connections are closed: no handshake in time, or no answer to pings."""

from __future__ import annotations

import asyncio
import time

from chimera.defaults import ConnectionLimits
from tests.conftest import StartServer

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # length 0, type SETTINGS
SETTINGS_ACK = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"


async def closed_after(port: int, send: bytes) -> float:
    """Opens a TCP connection, sends ``send``, never answers; seconds until the server
    closes it (it still reads, so the server's frames do not fill the socket)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(send)
    try:
        while await asyncio.wait_for(reader.read(65536), 30):
            pass  # the server's SETTINGS and PINGs: read, never acknowledged
    except (ConnectionResetError, TimeoutError):
        pass
    finally:
        writer.close()
    return time.monotonic() - started


async def test_half_open_grpc_connections_are_closed(start_server: StartServer) -> None:
    limits = ConnectionLimits(handshake=1.0, keepalive=1.0, keepalive_timeout=1.0, idle=1.0)
    server = await start_server(grpc_connection_limits=limits)
    port = server.server.grpc_port
    silent, no_acks = await asyncio.gather(
        asyncio.gather(*(closed_after(port, b"") for _ in range(20))),
        asyncio.gather(*(closed_after(port, PREFACE + EMPTY_SETTINGS + SETTINGS_ACK)
              for _ in range(20))),
    )
    # Never finishing the handshake: closed after about `handshake`.
    assert max(silent) < 10, silent
    # Handshake done, then silent with no call: closed after about `idle`.
    assert max(no_acks) < 15, no_acks
    async with server.client() as client:  # real clients are unaffected
        assert list((await client.list()).jobs) == []  # answered
