"""A raw HTTP/1.1 client over a plain socket: what goes on the wire is exactly what we wrote."""

from __future__ import annotations

import asyncio
import json
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
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [f"{method} {path} HTTP/1.1"]
        given = {k.lower() for k in (headers or {})}
        if "host" not in given:
            lines.append(f"Host: {host}:{port}")
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        lines.append("Connection: close")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed: dict[str, list[str]] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed.setdefault(name.strip().lower(), []).append(value.strip())
    return HttpReply(int(status_line.split(" ")[1]), parsed, body)
