"""A burst of connections while the server's loop is busy (a long collection, a
paused VM, every browser reconnecting after a restart) waits in the kernel's accept
queue, not in SYN retries: the WebSocket port listens with the system's largest
backlog (``socket.SOMAXCONN``), not asyncio's default of 100."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.processes import chimera_serve

BURST = 300  # well past asyncio's 100, well under Linux's somaxconn (4096)


async def test_a_burst_of_connections_to_a_stalled_server_is_queued_and_answered(
    tmp_path: Path,
) -> None:
    async with chimera_serve(tmp_path / "c.db", tmp_path / "serve.log") as node:
        node.freeze()  # nothing accepts: only the kernel's queue holds them
        try:
            # A dropped SYN is retried after 1 s: within 0.8 s only the queued ones connect.
            opened = await asyncio.gather(*(
                asyncio.wait_for(asyncio.open_connection("127.0.0.1", node.ws_port), 0.8)
                for _ in range(BURST)
            ), return_exceptions=True)
            connected = [pair for pair in opened if isinstance(pair, tuple)]
            assert len(connected) == BURST, f"{len(connected)} of {BURST} connected"
        finally:
            node.thaw()
        request = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{node.ws_port}\r\n\r\n".encode()
        for _, writer in connected:
            writer.write(request)
        lines = await asyncio.gather(*(
            asyncio.wait_for(reader.readline(), 30) for reader, _ in connected
        ))
        for _, writer in connected:
            writer.close()
        assert all(line.startswith(b"HTTP/1.1 200") for line in lines), set(lines)
