"""The first request on a connection, read before ``websockets`` sees it: every request
gets an HTTP answer, never a silent close.

``websockets`` reads a request head with :meth:`websockets.http11.Request.parse` and,
when that fails, closes the connection without a word: a request line that is not
``METHOD TARGET HTTP/1.x``, a bare LF where CRLF belongs, a header line without ``:``,
non-ASCII, and any request with a body (``curl -d`` sends ``Content-Length``). Bytes
after the head (a pipelined second request, or a client half-closing after its
request) are read as WebSocket frames before the first request is answered: the
connection fails, and answering the request then trips an assertion in websockets
(``send_eof``), logged with a traceback. ``process_request`` runs only for a request
websockets parsed, so none of this reaches a public hook.

:class:`EdgeConnection` is the ``create_connection`` of the listeners (``serve``
documents a subclass for customising connection handling). It reads the head with
websockets' own parser (:class:`HeadReader`, Sans-I/O) before passing it on:

- A head the parser refuses is answered here, with websockets' reason: 400 (414 for a
  request line over its 8 KiB, 431 for a header line over 8 KiB or over 128 headers).
- A head announcing a body (``Content-Length`` other than 0, or ``Transfer-Encoding``)
  is passed on without those two headers, and the body is not read. The routes
  answer as for any request (421, 404, 405 with ``Allow``); a route that matches
  answers 413 (:func:`announced_body`), since no endpoint takes a body.
- Nothing after the head is read until its answer is sent (the socket is paused):
  after a 101 it is read as WebSocket frames, as websockets would; after any other
  answer it is discarded. Every HTTP answer of websockets says
  ``Connection: close`` and closes, so a pipelined request is never answered; its
  client knows it was not processed (RFC 9112 §9.3.2, §9.6) and may send it again.

Every answer here is websockets' plain-text refusal (``Connection: close``, a one-line
body) with ``nosniff``, logged as websockets logs an answer; the access line names the
reason (:func:`refusal_of`).

The connection also keeps its peer's address from the start (:func:`peer_of`): on
TLS, asyncio's transport forgets it once closed, which is when a session gives back
its place in the per-address limits.
"""

from __future__ import annotations

import asyncio
import http
import re
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, Final, cast

from websockets.asyncio.server import Server, ServerConnection
from websockets.exceptions import HeaderLineTooLong, RequestLineTooLong, TooManyHeaders
from websockets.http11 import MAX_NUM_HEADERS, SERVER, Request, Response
from websockets.protocol import OPEN
from websockets.server import ServerProtocol
from websockets.streams import StreamReader

from chimera.http.responses import nosniff

ProcessRequest = Callable[
    [ServerConnection, Request], Awaitable[Response | None] | Response | None
]
ProcessResponse = Callable[
    [ServerConnection, Request, Response], Awaitable[Response | None] | Response | None
]

_BODY_HEADERS = frozenset({b"content-length", b"transfer-encoding"})
_DIGITS = re.compile(rb"[0-9]{1,18}")  # websockets' own bound for a Content-Length


@dataclass(frozen=True, slots=True)
class Head:
    """A request head websockets will parse: ``raw`` to pass on, ``rest`` what followed
    it, ``body`` what the head announced (``None``: no body)."""

    raw: bytes
    rest: bytes
    body: str | None


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request head websockets would close on without an answer: the answer."""

    status: http.HTTPStatus
    reason: str


class HeadReader:
    """Reads one request head from the bytes fed to it (Sans-I/O, like websockets'
    parsers): :meth:`feed` returns ``None`` until it has decided, then a :class:`Head`
    or a :class:`Refusal`.

    The parsing is websockets' :meth:`~websockets.http11.Request.parse` and its limits;
    this reader only sets aside the header lines that announce a body (websockets
    refuses them), and names a bare LF (websockets says the connection closed).
    """

    def __init__(self) -> None:
        self._reader = StreamReader()
        self._lines: list[bytes] = []  # every line read, CRLF included, in order
        self._body_lines: set[int] = set()  # their indexes in _lines
        self._parser = Request.parse(self._read_line)

    def feed(self, data: bytes) -> Head | Refusal | None:
        self._reader.feed_data(data)
        return self._step()

    def feed_eof(self) -> Head | Refusal | None:
        """The stream ended: a :class:`Refusal` for a head begun and not ended,
        ``None`` if nothing came."""
        if not self._lines and not self._reader.buffer:
            return None
        self._reader.feed_eof()
        return self._step()

    def _read_line(
        self, limit: int, too_long: type[Exception]
    ) -> Generator[None, None, bytes | bytearray]:
        """websockets' ``read_line``, skipping the lines that announce a body."""
        while True:
            line = bytes((yield from self._reader.read_line(limit, too_long)))
            if not line.endswith(b"\r\n"):
                raise ValueError(
                    f"line {len(self._lines) + 1} ends with a bare LF: HTTP lines end with CRLF"
                )
            self._lines.append(line)
            if len(self._lines) > MAX_NUM_HEADERS + 2:  # the request line, the blank line
                raise TooManyHeaders(f"expected no more than {MAX_NUM_HEADERS} headers")
            if len(self._lines) > 1 and line.partition(b":")[0].lower() in _BODY_HEADERS:
                self._body_lines.add(len(self._lines) - 1)
                continue
            return line

    def _step(self) -> Head | Refusal | None:
        try:
            next(self._parser)
        except StopIteration:
            return self._head()
        except RequestLineTooLong as exc:
            # Python < 3.13 names 414 REQUEST_URI_TOO_LONG.
            return Refusal(
                http.HTTPStatus.REQUEST_URI_TOO_LONG, f"the request line is too long: {exc}"
            )
        except (HeaderLineTooLong, TooManyHeaders) as exc:
            return Refusal(
                http.HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                f"the request's headers are too large: {exc}",
            )
        except EOFError:
            return Refusal(
                http.HTTPStatus.BAD_REQUEST,
                "the request ended before its head did (a blank line ends it)",
            )
        except UnicodeDecodeError:
            return Refusal(http.HTTPStatus.BAD_REQUEST, "the request line is not ASCII")
        except ValueError as exc:  # websockets' words: "invalid HTTP request line: …"
            return Refusal(http.HTTPStatus.BAD_REQUEST, str(exc))
        return None

    def _head(self) -> Head | Refusal:
        rest = bytes(self._reader.buffer)
        announced = [self._lines[i].partition(b":")[::2] for i in sorted(self._body_lines)]
        body: str | None = None
        for name, value in announced:
            value = value.strip(b" \t\r\n")
            if name.lower() == b"transfer-encoding":
                body = "a body of unknown length (Transfer-Encoding)"
            elif not _DIGITS.fullmatch(value):
                return Refusal(
                    http.HTTPStatus.BAD_REQUEST,
                    f"invalid Content-Length: {value.decode(errors='backslashreplace')!r}",
                )
            elif int(value) and body is None:
                body = f"a body of {int(value)} bytes"
        if body is None:  # Content-Length: 0 (websockets accepts it): passed on as it came
            return Head(b"".join(self._lines), rest, None)
        kept = (line for i, line in enumerate(self._lines) if i not in self._body_lines)
        return Head(b"".join(kept), rest, body)


class EdgeConnection(ServerConnection):
    """A :class:`~websockets.asyncio.server.ServerConnection` whose first request head
    is read by a :class:`HeadReader` first (see the module's docstring).

    Lifecycle: while the head is incomplete, nothing reaches websockets. Then either
    the answer is sent from here (websockets then discards what the client sends), or
    the head is passed on and the socket is not read until websockets has written its
    answer; what came in the same read as the head is held until then
    (:meth:`_release`). Not reading also holds back the end of the stream, which
    websockets would take, before its answer, for a failed connection (a client
    half-closing after its request).
    """

    # Slots, not the instance dict: websockets' connection already keeps 27 attributes
    # there, and past 30 keys CPython gives each instance a dict of its own instead of
    # the class's shared keys (~1.5 KiB more per connection; idle subscribers are most).
    __slots__ = ("_head", "_held", "announced_body", "asyncio_transport", "peer", "refusal",
                 "sansio")

    def __init__(self, protocol: ServerProtocol, server: Server, **kwargs: Any) -> None:
        super().__init__(protocol, server, **kwargs)
        # The two objects it runs on, kept as they are handed over, so that this class
        # and its users read websockets' documented API only: the Sans-I/O protocol
        # (ServerConnection's documented first argument: its state, send_*(),
        # data_to_send() and close_exc are documented) and the asyncio transport
        # (asyncio's connection_made(): write(), pause_reading(), abort() are asyncio's).
        self.sansio: Final = protocol
        self.asyncio_transport: asyncio.Transport  # set by connection_made, before the handler
        self.peer: Any = None  # see peer_of
        self._head: HeadReader | None = HeadReader()
        self._held: bytes | None = None  # not None: the head was passed on, not answered
        self.announced_body: str | None = None
        self.refusal: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # A stream socket's (TCP, TLS). Not an isinstance check: uvloop's transports
        # have asyncio.Transport's methods without subclassing it.
        self.asyncio_transport = cast(asyncio.Transport, transport)
        self.peer = self.asyncio_transport.get_extra_info("peername")

    def data_received(self, data: bytes) -> None:
        if self._head is None:
            super().data_received(data)
            return
        verdict = self._head.feed(data)
        if verdict is not None:
            self._decide(verdict)

    def eof_received(self) -> None:
        if self._head is not None:
            verdict = self._head.feed_eof()
            if verdict is not None:
                self._decide(verdict)
        # Reading is paused while a head is answered, but TLS hands over a close_notify
        # read with the head all the same (asyncio's sslproto): no answer can go back
        # then, and websockets, told, closes the connection at once.
        super().eof_received()

    def _decide(self, verdict: Head | Refusal) -> None:
        self._head = None
        if isinstance(verdict, Refusal):
            self.refusal = verdict.reason
            # websockets' own way to answer: the response, its access line, then the
            # end of the stream; what the client still sends is discarded.
            answer = nosniff(self.respond(verdict.status, f"{verdict.reason}\n"))
            self.sansio.send_response(answer)
            self._write_out()
            return
        self.announced_body = verdict.body
        self._held = verdict.rest if verdict.body is None else b""  # a body is never read
        self.asyncio_transport.pause_reading()
        super().data_received(verdict.raw)

    def _write_out(self) -> None:
        """Writes what the protocol has to send; its end of the stream (an empty
        chunk) half-closes the connection where the transport can, else closes it."""
        transport = self.asyncio_transport
        for data in self.sansio.data_to_send():
            if data:
                transport.write(data)
            elif transport.can_write_eof():
                transport.write_eof()
            else:
                transport.close()

    async def handshake(
        self,
        process_request: ProcessRequest | None = None,
        process_response: ProcessResponse | None = None,
        server_header: str | None = SERVER,
    ) -> None:
        """websockets' opening handshake, reading again once it is answered.

        websockets writes its answer in the same step as it calls ``process_response``
        (no ``await`` between them when it returns a plain value), so a callback
        scheduled from there runs once the answer is written: before websockets waits
        for the client to close (after a refusal), or reads frames (after a 101).
        """

        def answered(
            connection: ServerConnection, request: Request, response: Response
        ) -> Awaitable[Response | None] | Response | None:
            self.loop.call_soon(self._release)
            if process_response is None:
                return None
            return process_response(connection, request, response)

        await super().handshake(process_request, answered, server_header)

    def _release(self) -> None:
        """Reads again. After a 101, what came with the head is the client's first
        frames, read first; after any other answer it is dropped, and websockets
        discards what follows until the client closes."""
        held, self._held = self._held, None
        if held is None or self.asyncio_transport.is_closing():
            return
        self.asyncio_transport.resume_reading()  # first: reading the frames may pause it again
        if held and self.sansio.state is OPEN:
            super().data_received(held)


def peer_of(connection: ServerConnection) -> Any:
    """The peer's address (``(host, port)`` on TCP) as it was when the connection
    opened. asyncio's TLS transport forgets it once closed (``None``, or an
    ``AttributeError``), which is when a session's end releases its place in the
    per-address limits and websockets logs ``connection closed``."""
    if isinstance(connection, EdgeConnection):
        return connection.peer
    return connection.remote_address


def announced_body(connection: ServerConnection) -> str | None:
    """The body the request on ``connection`` announced and was not read (``None``: none)."""
    return connection.announced_body if isinstance(connection, EdgeConnection) else None


def refusal_of(connection: object) -> str | None:
    """Why :class:`EdgeConnection` answered ``connection`` itself (``None``: it did not)."""
    return connection.refusal if isinstance(connection, EdgeConnection) else None
