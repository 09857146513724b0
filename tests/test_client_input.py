"""Hostile input a client can send that once got a traceback or a wrong answer."""

from __future__ import annotations

import json
import logging
import urllib.parse

import grpc
import pytest

from chimera.v1 import jobs_pb2 as pb
from tests.conftest import Running, run_job, ws_connect
from tests.test_fuzz import http_request


async def test_deeply_nested_json_gets_an_error_and_the_connection_stays(
    server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    # A job that does not exist yet: the subscriber waits, so nothing else closes it.
    ws = await ws_connect(server.ws_url("later"))
    assert json.loads(await ws.recv())["type"] == "connected"
    with caplog.at_level(logging.ERROR):
        for nested in ('{"type":' + "[" * 15_000, "[" * 16_000, '{"a":' + "{" * 15_000):
            await ws.send(nested)
            reply = json.loads(await ws.recv())
            assert "unknown message" in reply["data"]["error"]
        await ws.send("ping")
        assert json.loads(await ws.recv())["type"] == "pong"
    assert ws.close_code is None
    assert "Traceback" not in caplog.text and "RecursionError" not in caplog.text
    await ws.close()


async def test_since_takes_ascii_digits_only(server: Running) -> None:
    await run_job(server, "done")
    for since in ("²", "٣", "\uff13", "1²"):  # superscript, Arabic-Indic, full-width
        query = urllib.parse.urlencode({"since": since})
        raw = f"GET /ws/orchestrate/done?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        status, body = await http_request(server, raw)
        assert status == 400, since
        assert b"since must be one whole number" in body
    async with server.client() as client:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            # a page token whose number is "٣" in base64: "v1:٣"
            await client.list(page_token="djE62aM")
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    "method, raw",
    [
        ("CreateJob", b"\x0a\x02\xff\xfe"),  # brief: invalid UTF-8
        ("CreateJob", b"\x0a\x10abc"),  # brief: truncated
        ("GetJob", b"\x0a\x05ab"),  # job_id: truncated
        ("StreamJobEvents", b"\x0a\x03\xc3\x28x"),  # job_id: invalid UTF-8
    ],
)
async def test_undecodable_grpc_requests_are_invalid_argument(
    server: Running, method: str, raw: bytes
) -> None:
    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        path = f"/chimera.v1.JobService/{method}"
        if method == "StreamJobEvents":
            call = channel.unary_stream(path, None, None)(raw)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in call:
                    pass
        else:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await channel.unary_unary(path, None, None)(raw)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert "could not be decoded" in (info.value.details() or "")
    # Still serving.
    async with server.client() as client:
        assert (await client.list()).jobs is not None
    assert pb.CreateJobRequest.FromString(b"\x0a\x01a").brief == "a"
