"""Requests websockets cannot parse, on the real server's ports: each gets a status line.

websockets closes the connection without an answer on a request with a body, a
malformed head, or bytes after the head (``chimera/http/edge.py`` says why); these
tests write raw bytes to a socket on loopback and read what comes back until the
server closes: one response, with ``Connection: close``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import ssl
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

from tests.conftest import Running, StartServer, logged, until, ws_connect
from tests.http_raw import HttpReply, exchange, parse_reply
from tests.security import self_signed

HOST = b"Host: 127.0.0.1\r\n"
BEYOND_ONE_READ = 1 << 20  # asyncio reads a socket 256 KiB at a time
ACCESS = "chimera.gateways.ws_gateway.connections"


def only_reply(raw: bytes, status: int, *, nosniff: bool = True) -> HttpReply:
    """``raw`` is one response with ``status``, and the connection closed after it."""
    reply = parse_reply(raw)
    assert reply.status == status, raw[:200]
    assert reply.header("Connection") == "close"
    if nosniff:  # every answer of the WebSocket port says it
        assert reply.header("X-Content-Type-Options") == "nosniff"
    assert len(reply.body) == int(reply.header("Content-Length") or -1), "nothing after it"
    assert reply.body.strip(), "it says what is wrong"
    return reply


BODY = b'{"brief": "a login form"}'


@pytest.mark.parametrize(
    "request_bytes",
    [
        # curl -X POST localhost:8888/api/jobs -d '{"brief": …}'
        b"POST /api/jobs HTTP/1.1\r\n" + HOST + b"Content-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY,
        b"POST /api/jobs HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n"
        b"%x\r\n" % len(BODY) + BODY + b"\r\n0\r\n\r\n",
        # A body far bigger than the socket's buffers, written before reading.
        b"POST /api/jobs HTTP/1.1\r\n" + HOST + b"Content-Length: %d\r\n\r\n" % (1 << 20)
        + b"x" * (1 << 20),
    ],
    ids=["content-length", "chunked", "1-MiB"],
)
async def test_a_post_with_a_body_is_405_with_allow(server: Running, request_bytes: bytes) -> None:
    raw = await exchange(server.server.ws_port, request_bytes)
    reply = only_reply(raw, 405)
    assert reply.header("Allow") == "GET, OPTIONS"
    assert reply.body == b"POST is not allowed here: use GET, OPTIONS\n"


@pytest.mark.parametrize(
    ("request_bytes", "announced"),
    [
        (b"GET /healthz HTTP/1.1\r\n" + HOST + b"Content-Length: 5\r\n\r\nhello",
         b"a body of 5 bytes"),
        (b"GET /api/jobs HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n"
         b"5\r\nhello\r\n0\r\n\r\n", b"a body of unknown length (Transfer-Encoding)"),
        # An upgrade with a body is not upgraded.
        (b"GET /ws/orchestrate/x HTTP/1.1\r\n" + HOST + b"Upgrade: websocket\r\n"
         b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
         b"Sec-WebSocket-Version: 13\r\nContent-Length: 2\r\n\r\nhi", b"a body of 2 bytes"),
    ],
    ids=["healthz", "jobs-chunked", "upgrade"],
)
async def test_a_body_where_the_method_is_allowed_is_413(
    server: Running, request_bytes: bytes, announced: bytes
) -> None:
    raw = await exchange(server.server.ws_port, request_bytes)
    reply = only_reply(raw, 413)
    assert b"takes no request body" in reply.body and announced in reply.body


async def test_a_body_is_checked_after_the_host(server: Running) -> None:
    """The DNS rebinding guard comes first, body or not."""
    raw = await exchange(
        server.server.ws_port,
        b"POST /api/jobs HTTP/1.1\r\nHost: evil.example\r\nContent-Length: 2\r\n\r\nhi",
    )
    assert b"DNS rebinding guard" in only_reply(raw, 421).body


LONG = b"a" * 9000
MALFORMED = {
    "lf-only": (b"GET /healthz HTTP/1.1\nHost: 127.0.0.1\n\n", 400,
                b"line 1 ends with a bare LF: HTTP lines end with CRLF"),
    "lf-in-headers": (b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\n\r\n", 400,
                      b"line 2 ends with a bare LF"),
    "garbage": (b"HELLO\r\n\r\n", 400, b"invalid HTTP request line: HELLO"),
    "http-2": (b"GET / HTTP/2.0\r\n" + HOST + b"\r\n", 400, b"unsupported protocol"),
    "no-colon": (b"GET / HTTP/1.1\r\n" + HOST + b"no colon here\r\n\r\n", 400,
                 b"invalid HTTP header line: no colon here"),
    "not-ascii": (b"GET /\xff HTTP/1.1\r\n" + HOST + b"\r\n", 400, b"not ASCII"),
    "bad-length": (b"GET / HTTP/1.1\r\n" + HOST + b"Content-Length: -1\r\n\r\n", 400,
                   b"invalid Content-Length: '-1'"),
    "long-line": (b"GET /" + LONG + b" HTTP/1.1\r\n" + HOST + b"\r\n", 414,
                  b"the request line is too long"),
    "long-header": (b"GET / HTTP/1.1\r\n" + HOST + b"X-Big: " + LONG + b"\r\n\r\n", 431,
                    b"the request's headers are too large"),
    "many-headers": (b"GET / HTTP/1.1\r\n" + HOST
                     + b"".join(b"X-%d: y\r\n" % i for i in range(200)) + b"\r\n", 431,
                     b"expected no more than 128 headers"),
}


@pytest.mark.parametrize(("request_bytes", "status", "says"), MALFORMED.values(),
                         ids=MALFORMED.keys())
async def test_a_malformed_head_gets_its_status(
    server: Running, request_bytes: bytes, status: int, says: bytes
) -> None:
    raw = await exchange(server.server.ws_port, request_bytes)
    assert says in only_reply(raw, status).body


async def test_a_head_cut_short_by_the_end_of_the_stream_is_400(server: Running) -> None:
    raw = await exchange(
        server.server.ws_port, b"GET /healthz HTTP/1.1\r\n" + HOST, half_close=True
    )
    assert b"the request ended before its head did" in only_reply(raw, 400).body


async def test_a_request_then_the_end_of_the_stream_is_answered(server: Running) -> None:
    """``printf 'GET …\\r\\n\\r\\n' | nc -N``: the client half-closes after its request."""
    raw = await exchange(
        server.server.ws_port, b"GET /healthz HTTP/1.1\r\n" + HOST + b"\r\n", half_close=True
    )
    assert only_reply(raw, 200).body == b"ok\n"


async def test_a_pipelined_pair_gets_the_first_answered_then_close(
    server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """The first request is answered with ``Connection: close`` and the connection
    closes: the second is not processed, and its client may send it again (RFC 9112
    §9.3.2). No traceback is logged (websockets' ``AssertionError`` was)."""
    caplog.set_level(logging.INFO)
    second = b"GET /api/jobs/second HTTP/1.1\r\n" + HOST + b"\r\n"
    with logged(ACCESS, "HTTP response sent (200 OK): GET /api/jobs ") as answered:
        raw = await exchange(
            server.server.ws_port, b"GET /api/jobs HTTP/1.1\r\n" + HOST + b"\r\n" + second
        )
        await answered
    reply = parse_reply(raw)
    assert reply.status == 200 and reply.header("Connection") == "close"
    assert json.loads(reply.body) == {"jobs": [], "next_page_token": ""}  # and nothing after
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    # More than one read of the socket: still the first answered, then close.
    raw = await exchange(
        server.server.ws_port, b"GET /healthz HTTP/1.1\r\n" + HOST + b"\r\n"
        + second * (BEYOND_ONE_READ // len(second)),
    )
    assert only_reply(raw, 200).body == b"ok\n"


def handshake(path: str) -> bytes:
    key = base64.b64encode(os.urandom(16))
    return (
        f"GET {path} HTTP/1.1\r\n".encode() + HOST + b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """A client's frame (RFC 6455 §5.2: FIN, a mask), payload under 126 bytes."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


TEXT, PONG = 0x1, 0xA


@pytest.mark.parametrize("padding", [0, BEYOND_ONE_READ], ids=["ping", "beyond-one-read"])
async def test_frames_sent_with_the_upgrade_request_are_read_after_the_101(
    server: Running, padding: int
) -> None:
    """Bytes after the head are held until the answer, not dropped: after a 101 they
    are the client's first frames, read in order: unsolicited pongs (ignored, RFC 6455
    §5.5.3), more than one read of the socket, then ``ping``, answered with a pong."""
    pong = masked_frame(PONG, b"x" * 120)
    early = pong * (padding // len(pong)) + masked_frame(TEXT, b"ping")
    reader, writer = await asyncio.open_connection("127.0.0.1", server.server.ws_port)
    try:
        writer.write(handshake("/ws/orchestrate/early") + early)
        received = b""
        while b'"pong"' not in received:
            chunk = await asyncio.wait_for(reader.read(65536), 10)
            assert chunk, f"closed before the pong: {received[:200]!r}"
            received += chunk
    finally:
        writer.close()
    assert received.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")


async def test_a_refusal_logs_one_access_line_with_its_reason_and_peer(
    server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS)
    with logged(ACCESS, "HTTP response sent (400 Bad Request)") as answered:
        await exchange(server.server.ws_port, b"HELLO /?token=secret\r\n\r\n")
        record = await answered
    assert re.fullmatch(
        r"HTTP response sent \(400 Bad Request\): invalid HTTP request line: "
        r"HELLO /\?token=\[redacted\] from 127\.0\.0\.1:\d+",
        record.getMessage(),
    ), record.getMessage()
    assert getattr(record, "peer", None) == "127.0.0.1"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def test_the_metrics_port_answers_them_too(start_server: StartServer) -> None:
    server = await start_server(metrics_port=0)
    assert server.server.metrics is not None
    port = server.server.metrics.port
    raw = await exchange(port, b"HELLO\r\n\r\n")
    assert b"invalid HTTP request line" in only_reply(raw, 400).body
    raw = await exchange(
        port, b"POST /metrics HTTP/1.1\r\n" + HOST + b"Content-Length: 2\r\n\r\nhi"
    )
    assert only_reply(raw, 405, nosniff=False).header("Allow") == "GET"


async def test_over_tls_too(start_server: StartServer, tmp_path: Path) -> None:
    """The same answers on an ``https://`` port: a body, then a pipelined pair."""
    cert = self_signed(tmp_path)
    server = await start_server(tls_cert=str(cert.cert), tls_key=str(cert.key))
    tls = ssl.create_default_context(cafile=str(cert.cert))
    port = server.server.ws_port
    raw = await exchange(
        port, b"POST /api/jobs HTTP/1.1\r\n" + HOST + b"Content-Length: 2\r\n\r\nhi", tls=tls
    )
    assert only_reply(raw, 405).header("Allow") == "GET, OPTIONS"
    pair = b"GET /healthz HTTP/1.1\r\n" + HOST + b"\r\n"
    assert only_reply(await exchange(port, pair * 2, tls=tls), 200).body == b"ok\n"
    raw = await exchange(port, b"HELLO\r\n\r\n", tls=tls)
    assert b"invalid HTTP request line" in only_reply(raw, 400).body


async def test_over_tls_each_closed_subscriber_gives_its_address_s_place_back(
    start_server: StartServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """asyncio's TLS transport forgets its peer once closed, which is when a session
    releases its place in the per-address limit: the address is the one it opened with.
    (It was None: the place was never given back, a KeyError was logged, and from the
    limit on every subscriber from that address was refused 429.)"""
    caplog.set_level(logging.INFO)
    cert = self_signed(tmp_path)
    server = await start_server(
        tls_cert=str(cert.cert), tls_key=str(cert.key), max_subscribers_per_address=2
    )
    tls = ssl.create_default_context(cafile=str(cert.cert))
    url = f"wss://127.0.0.1:{server.server.ws_port}/ws/orchestrate/"
    opened: list[ClientConnection] = []

    async def accepted(job_id: str) -> bool:
        """Asked again while the last one's place is being given back (its session's
        end runs after the client sees the close)."""
        try:
            opened.append(await ws_connect(url + job_id, ssl=tls))
        except InvalidStatus as exc:
            assert exc.response.status_code == 429
            return False
        return True

    for i in range(6):  # three times the limit, one after the other
        await until(lambda: accepted(f"w{i}"))  # noqa: B023 (awaited in this turn)
        ws = opened.pop()
        assert json.loads(await ws.recv())["type"] == "connected"
        await ws.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
