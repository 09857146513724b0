"""A raw HTTP/1.1 client over a plain socket: what goes on the wire is exactly what we wrote."""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass
from typing import Any


@dataclass
class HttpReply:
    status: int
    headers: dict[str, list[str]]  # lower-cased names
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None

    def json(self) -> Any:
        return json.loads(self.body)


async def http_request(
    port: int, method: str, path: str, headers: dict[str, str] | None = None,
    host: str = "127.0.0.1",
) -> HttpReply:
    """Sends one request (``Host: 127.0.0.1:PORT`` unless ``headers`` names another)
    and reads the reply until the server closes the connection."""
    lines = [f"{method} {path} HTTP/1.1"]
    given = {k.lower() for k in (headers or {})}
    if "host" not in given:
        lines.append(f"Host: {host}:{port}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    lines.append("Connection: close")
    return parse_reply(await exchange(port, ("\r\n".join(lines) + "\r\n\r\n").encode()))


async def exchange(
    port: int, raw: bytes, *, half_close: bool = False, tls: ssl.SSLContext | None = None
) -> bytes:
    """Writes ``raw`` as it is, in one write (then the end of the stream if
    ``half_close``; over TLS with ``tls``), and returns every byte the server sends
    until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
    try:
        writer.write(raw)
        if half_close:
            writer.write_eof()
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


def parse_reply(raw: bytes) -> HttpReply:
    """One response: the status line, the headers and what follows them."""
    assert raw.startswith(b"HTTP/1.1 "), f"no status line: {raw[:80]!r}"
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed: dict[str, list[str]] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed.setdefault(name.strip().lower(), []).append(value.strip())
    return HttpReply(int(status_line.split(" ")[1]), parsed, body)
