"""A minimal scripted HTTP/1.1 server on loopback, for fake provider APIs.

It speaks just enough HTTP/1.1 for the SDKs' clients (keep-alive, requests
with ``Content-Length``, responses with ``Transfer-Encoding: chunked`` or
``Content-Length``) and nothing more, so tests can control every byte:

- a :class:`Reply` is a status, headers and a body made of byte pieces and
  :class:`Pause` values; each piece is sent as one HTTP chunk;
- ``split`` writes the wire bytes (chunk framing included) in fragments of a
  few bytes with ``split_delay`` between them, so the client reads them at
  odd places;
- ``ending`` says how the response ends: ``"complete"`` (terminating chunk;
  the connection stays open for the next request), ``"drop"`` (the
  connection is closed mid-body) or ``"hang"`` (nothing more is sent until
  the client goes away: a stall mid-stream);
- ``stall_headers`` sends nothing at all until the client goes away (a
  response slower than any time-out).

A stall lasts until the client gives up, not for a fixed time, so a time-out
test neither races a pause that may end first on a loaded machine nor waits
longer than the client's own time-out.

Replies are taken per request from a queue filled with :meth:`FakeHTTPServer.script`;
when it is empty the server's ``default`` answers. Entries may also be
functions of the :class:`RecordedRequest`. Every request is recorded in
:attr:`FakeHTTPServer.requests`, and the time each connection closed in
:attr:`FakeHTTPServer.closed_at` (see :meth:`FakeHTTPServer.wait_closed`).

Lifecycle: ``async with FakeHTTPServer(...) as server`` listens on
127.0.0.1 on a free port and, on exit, stops listening and cancels (and
awaits) every connection handler.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Self, TypedDict
from urllib.parse import parse_qsl, urlsplit

Ending = Literal["complete", "drop", "hang"]

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    529: "Site Overloaded",
}


@dataclass(frozen=True, slots=True)
class Pause:
    """A pause of ``seconds`` in the middle of a body."""

    seconds: float


Piece = bytes | Pause


@dataclass(frozen=True, slots=True)
class Reply:
    """One scripted HTTP response (see the module docstring)."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Sequence[Piece] = ()
    ending: Ending = "complete"
    chunked: bool = True
    stall_headers: bool = False
    split: int | None = None
    split_delay: float = 0.0


class Delivery(TypedDict, total=False):
    """How a fake's ``stream_reply`` delivers its events: the :class:`Reply`
    fields of the same names."""

    ending: Ending
    split: int | None
    split_delay: float
    stall_headers: bool


@dataclass(slots=True)
class RecordedRequest:
    """What a client sent. Header names are lower-case."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    connection: int
    received_at: float

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(urlsplit(self.target).query))

    def json(self) -> Any:
        return json.loads(self.body)


Script = Reply | Callable[[RecordedRequest], Reply]


def json_reply(status: int, payload: object, headers: Mapping[str, str] | None = None) -> Reply:
    """A complete JSON response with a ``Content-Length``."""
    return Reply(
        status=status,
        headers={"content-type": "application/json", **(headers or {})},
        body=(json.dumps(payload).encode(),),
        chunked=False,
    )


class FakeHTTPServer:
    """The scripted server. Subclasses give the API's usual reply
    (:meth:`standard_reply`) and its routing (:meth:`route`, which refuses a
    request without ``api_key`` when one is set)."""

    def __init__(self, default: Script | None = None, *, api_key: str | None = None) -> None:
        """``default`` answers once the scripted replies are used up (None: the
        :meth:`standard_reply`)."""
        self.default: Script = default if default is not None else self.standard_reply()
        self.api_key = api_key
        self.requests: list[RecordedRequest] = []
        self.closed_at: dict[int, float] = {}
        self._queue: deque[Script] = deque()
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Condition()
        self._next_connection = 0

    # -- lifecycle -------------------------------------------------------

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``, the base URL to give a client."""
        return f"http://127.0.0.1:{self.port}"

    # -- scripting -------------------------------------------------------

    def script(self, *replies: Script) -> None:
        """Queue replies; each request takes the next one (then the default)."""
        self._queue.extend(replies)

    @property
    def pending(self) -> int:
        """Scripted replies not used yet."""
        return len(self._queue)

    def standard_reply(self) -> Script:
        """What every request gets when a test scripts nothing."""
        raise NotImplementedError

    def route(self, request: RecordedRequest) -> Reply | None:
        """A reply for requests the fake does not serve (wrong path, wrong key), or None."""
        return None

    async def wait_for_requests(self, count: int, within: float = 5.0) -> list[RecordedRequest]:
        """Wait until ``count`` requests arrived; return them."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: len(self.requests) >= count)
        return self.requests[:count]

    async def wait_closed(self, request: RecordedRequest, within: float = 5.0) -> float:
        """Wait until ``request``'s connection closed; return when (``time.monotonic``)."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: request.connection in self.closed_at)
        return self.closed_at[request.connection]

    # -- serving ---------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The work runs in a task of its own that close() may cancel; this
        # callback task (owned by asyncio.start_server) then ends normally,
        # which Python 3.11's StreamReaderProtocol requires of it.
        task = asyncio.create_task(self._connection(reader, writer))
        self._handlers.add(task)
        try:
            await asyncio.wait({task})
        finally:
            self._handlers.discard(task)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._next_connection += 1
        connection = self._next_connection
        try:
            while await self._exchange(connection, reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self.closed_at[connection] = time.monotonic()
            await self._notify()

    async def _exchange(
        self, connection: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Serve one request; return whether the connection can take another."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, target, _version = request_line.split(" ", 2)
        headers: dict[str, str] = {}
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        request = RecordedRequest(method, target, headers, body, connection, time.monotonic())
        self.requests.append(request)
        await self._notify()

        reply = self.route(request)
        if reply is None:
            script = self._queue.popleft() if self._queue else self.default
            reply = script(request) if callable(script) else script
        return await self._send(reply, reader, writer)

    async def _send(
        self, reply: Reply, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        if reply.stall_headers:
            await reader.read()  # until the client closes the connection
            return False
        reason = _REASONS.get(reply.status, "Unknown")
        head = [f"HTTP/1.1 {reply.status} {reason}"]
        head += [f"{name}: {value}" for name, value in reply.headers.items()]
        pieces = [piece for piece in reply.body if isinstance(piece, bytes)]
        if reply.chunked:
            head.append("transfer-encoding: chunked")
        else:
            head.append(f"content-length: {sum(len(piece) for piece in pieces)}")
        await self._write(writer, ("\r\n".join(head) + "\r\n\r\n").encode("latin-1"), reply)
        for piece in reply.body:
            if isinstance(piece, Pause):
                await asyncio.sleep(piece.seconds)
            elif reply.chunked:
                if piece:
                    await self._write(writer, b"%x\r\n%s\r\n" % (len(piece), piece), reply)
            else:
                await self._write(writer, piece, reply)
        if reply.ending == "drop":
            return False
        if reply.ending == "hang":
            await reader.read()  # until the client closes the connection
            return False
        if reply.chunked:
            await self._write(writer, b"0\r\n\r\n", reply)
        return True

    @staticmethod
    async def _write(writer: asyncio.StreamWriter, data: bytes, reply: Reply) -> None:
        step = reply.split or len(data) or 1
        for start in range(0, len(data), step):
            writer.write(data[start : start + step])
            await writer.drain()
            if reply.split and reply.split_delay:
                await asyncio.sleep(reply.split_delay)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()
