"""Tokens and origins on the WebSocket plane: refused at the handshake, never after `connected`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin, Subprotocol

from chimera.client import JobsClient
from tests.conftest import Running, StartServer, read_until_closed, ws_connect
from tests.security import SECRET, token


@pytest.fixture
async def secured(start_server: StartServer) -> Running:
    return await start_server(jwt_secret=SECRET)


async def refused(url: str, **kwargs: Any) -> tuple[int, str]:
    with pytest.raises(InvalidStatus) as info:
        await ws_connect(url, **kwargs)
    response = info.value.response
    return response.status_code, response.body.decode() if response.body else ""


def protocols(value: str) -> list[Subprotocol]:
    return [Subprotocol("chimera.bearer"), Subprotocol(value)]


async def finished_job(server: Running, job_id: str, owner: str = "alice") -> None:
    async with JobsClient(server.grpc_target, token=token(owner)) as client:
        await client.create("a counter", job_id=job_id)
        async for _ in client.events(job_id):
            pass


async def test_token_as_subprotocol_pair_query_or_header(secured: Running) -> None:
    await finished_job(secured, "mine")
    alice = token("alice")
    ways: list[tuple[str, dict[str, Any]]] = [
        (secured.ws_url("mine"), {"subprotocols": protocols(alice)}),
        (secured.ws_url("mine", f"token={alice}"), {}),
        (secured.ws_url("mine", f"since=3&token={alice}"), {}),
        (secured.ws_url("mine"), {"additional_headers": {"Authorization": f"Bearer {alice}"}}),
    ]
    for url, kwargs in ways:
        ws = await ws_connect(url, **kwargs)
        if "subprotocols" in kwargs:
            # Browsers require one offered subprotocol back; never the token itself.
            assert ws.subprotocol == "chimera.bearer"
        messages = await read_until_closed(ws)
        assert messages[0]["type"] == "connected"
        assert messages[-1]["data"] == {"status": "succeeded"}


async def test_no_token_expired_or_bad_signature_is_401_before_connected(
    secured: Running,
) -> None:
    await finished_job(secured, "mine")
    cases = {
        "": "requires a token",
        token("alice", now=time.time() - 7200, ttl=60): "expired",
        token("alice", key="another-secret-that-is-also-long-enough-000"): "signature",
        token("alice", audience="elsewhere"): "audience",
        "garbage": "invalid",
    }
    for value, text in cases.items():
        if value:
            status, body = await refused(secured.ws_url("mine"), subprotocols=protocols(value))
            assert status == 401 and text in body, (text, body)
            assert value not in body
            status, body = await refused(secured.ws_url("mine", f"token={value}"))
        else:
            status, body = await refused(secured.ws_url("mine"))
        assert status == 401 and text in body, (text, body)


async def test_a_token_for_job_a_cannot_watch_job_b(secured: Running) -> None:
    await finished_job(secured, "job-a")
    await finished_job(secured, "job-b")
    for_a = token("viewer", "read", job="job-a")
    status, body = await refused(secured.ws_url("job-b"), subprotocols=protocols(for_a))
    assert status == 403 and "limited to job 'job-a'" in body
    ws = await ws_connect(secured.ws_url("job-a"), subprotocols=protocols(for_a))
    messages = await read_until_closed(ws)
    assert {m["job_id"] for m in messages} == {"job-a"}
    # A one-job token may wait for its job before it exists.
    early = await ws_connect(secured.ws_url("job-c"), subprotocols=protocols(
        token("viewer", "read", job="job-c")))
    assert json.loads(await early.recv())["type"] == "connected"
    await early.close()


async def test_own_jobs_only_and_scopes(secured: Running) -> None:
    await finished_job(secured, "bobs", owner="bob")
    # Alice's job-wide token: Bob's job looks like a missing one. Her token may submit,
    # so both sockets are accepted for a create_job (tests/test_ws_submit.py) and
    # show nothing until then; a read-only token gets 404 for both.
    for job_id in ("bobs", "never-made"):
        ws = await ws_connect(secured.ws_url(job_id), subprotocols=protocols(token("alice")))
        assert json.loads(await ws.recv())["type"] == "connected"
        await ws.send("ping")
        assert json.loads(await ws.recv())["type"] == "pong"  # no event of bob's came first
        await ws.close()
        status, body = await refused(
            secured.ws_url(job_id), subprotocols=protocols(token("alice", "read"))
        )
        assert status == 404 and "does not exist" in body
    status, body = await refused(
        secured.ws_url("bobs"), subprotocols=protocols(token("bob", "submit"))
    )
    assert status == 403 and "'read' scope" in body
    ws = await ws_connect(secured.ws_url("bobs"), subprotocols=protocols(token("bob")))
    assert (await read_until_closed(ws))[-1]["data"] == {"status": "succeeded"}


async def test_origin_allowlist(start_server: StartServer) -> None:
    server = await start_server(allowed_origins=("https://app.example.com",))
    port = server.server.ws_port
    status, body = await refused(server.ws_url("j"), origin="https://evil.example.com")
    assert status == 403 and "Origin" in body
    ok = await ws_connect(server.ws_url("j"), origin="https://app.example.com")
    assert json.loads(await ok.recv())["type"] == "connected"
    await ok.close()
    # The server's own origin (a page it served) is always allowed.
    same = await connect(
        f"ws://localhost:{port}/ws/orchestrate/j", origin=Origin(f"http://localhost:{port}")
    )
    assert json.loads(await same.recv())["type"] == "connected"
    await same.close()


async def test_cross_site_hijack_refused_by_default(server: Running) -> None:
    status, _ = await refused(server.ws_url("j"), origin="https://evil.example.com")
    assert status == 403
    # Non-browser clients send no Origin and are unaffected.
    ws = await ws_connect(server.ws_url("j"))
    assert json.loads(await ws.recv())["type"] == "connected"
    await ws.close()


async def test_snapshot_needs_the_same_auth(secured: Running) -> None:
    await finished_job(secured, "snap")
    base = f"http://127.0.0.1:{secured.server.ws_port}/api/jobs/snap"

    def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
        request = urllib.request.Request(url, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    status, body = await asyncio.to_thread(fetch, base)
    assert status == 401 and "requires a token" in json.loads(body)["error"]
    status, body = await asyncio.to_thread(
        fetch, base, {"Authorization": f"Bearer {token('alice')}"}
    )
    assert status == 200 and json.loads(body)["state"] == "succeeded"
    status, body = await asyncio.to_thread(fetch, f"{base}?token={token('alice')}")
    assert status == 200
    status, body = await asyncio.to_thread(fetch, f"{base}?token={token('mallory')}")
    assert status == 404
    status, _ = await asyncio.to_thread(fetch, f"http://127.0.0.1:{secured.server.ws_port}/healthz")
    assert status == 200  # health stays open


async def test_tokens_never_reach_the_logs(
    secured: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await finished_job(secured, "logged")
    good, bad = token("alice"), token("alice", key="another-secret-that-is-also-long-enough-000")
    for value in (good, bad):
        for kwargs in (
            {"subprotocols": protocols(value)},
            {"additional_headers": {"Authorization": f"Bearer {value}"}},
        ):
            with contextlib.suppress(InvalidStatus):
                await read_until_closed(await ws_connect(secured.ws_url("logged"), **kwargs))
        with contextlib.suppress(InvalidStatus):
            await read_until_closed(await ws_connect(secured.ws_url("logged", f"token={value}")))
    # The server's records (the test's own websockets client logs what it sends).
    server_records = [r for r in caplog.records if not r.name.startswith("websockets.client")]
    text = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in server_records)
    assert "GET /ws/orchestrate/logged" in text  # the debug request log is there...
    for value in (good, bad):
        assert value not in text  # ...but not the tokens
        assert value.split(".")[2] not in text
