"""The WebSocket gateway with real websockets clients."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from chimera.defaults import MAX_CLIENT_FRAME
from chimera.events import TeamName
from tests.conftest import (
    Running,
    StartServer,
    job_events,
    read_until_closed,
    wait_for_sequence,
    ws_connect,
)
from tests.doubles import ScriptedProvider, factory

TIMESTAMP = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"
# /work/shared/streaming-guide.md, "Message types".
GUIDE_DATA_KEYS = {
    "status_change": {"status"},
    "thought_added": {"id", "text", "timestamp", "team"},
    "code_generated": {"code", "token_count"},
    "error": {"error", "status"},
    # Not the guide's: Chimera's one added type (README, WebSocket message types).
    "code_delta": {"offset", "text"},
}
GUIDE_EXTRA_KEYS: dict[str, set[str]] = {
    "code_delta": set(),
    "status_change": {"model"},
    "thought_added": set(),
    "code_generated": {"language", "input_tokens"},
    "error": set(),
}


def check_guide_shape(message: dict[str, Any]) -> None:
    import re

    assert re.match(TIMESTAMP, message["timestamp"])
    if "team" in message:
        assert message["team"] in ("anthropic", "google")
    # The guide's data keys per type (status_change may add "model",
    # code_generated "language" and "input_tokens"); a thought is exactly {id, text,
    # timestamp, team}.
    data = message["data"]
    required = GUIDE_DATA_KEYS[message["type"]]
    assert required <= data.keys(), (message["type"], data)
    assert data.keys() - required <= GUIDE_EXTRA_KEYS[message["type"]], data
    if message["type"] == "thought_added":
        assert data["team"] == message["team"] and data["text"] and data["id"]
        assert re.match(TIMESTAMP, data["timestamp"])
    if message["type"] == "code_generated":
        assert isinstance(data["token_count"], int)
    if message["type"] == "code_delta":
        assert isinstance(data["offset"], int) and isinstance(data["text"], str)


async def test_subscribers_before_during_after_get_the_same_complete_sequence(
    start_server: StartServer,
) -> None:
    hold = asyncio.Event()
    providers = factory(
        {
            TeamName.ANTHROPIC: lambda: ScriptedProvider(["a1", "a2", "a3"], hold=hold),
            TeamName.GOOGLE: lambda: ScriptedProvider(["g1", "g2"], hold=hold),
        }
    )
    server = await start_server(providers)
    before = await ws_connect(server.ws_url("watched"))
    connected = json.loads(await before.recv())
    assert connected["type"] == "connected" and connected["job_id"] == "watched"
    async with server.client() as client:
        await client.create("Create a login form", job_id="watched")
        # Mid-run: wait until the teams have thought, then join.
        await wait_for_sequence(client, "watched", 8)
        during = await ws_connect(server.ws_url("watched"))
        hold.set()
        got_before = job_events(await read_until_closed(before))
        got_during = job_events(await read_until_closed(during))
        after = await ws_connect(server.ws_url("watched"))
        got_after = job_events(await read_until_closed(after))
        job = await client.get("watched")
    assert got_before == got_during == got_after
    assert [m["seq"] for m in got_before] == list(range(1, job.last_sequence + 1))
    for message in got_before:
        check_guide_shape(message)
        assert message["job_id"] == "watched"
    assert got_before[0]["type"] == "status_change"
    assert got_before[0]["data"] == {"status": "running"}
    assert got_before[-1]["data"] == {"status": "succeeded"} and "team" not in got_before[-1]
    thoughts = [m["data"]["text"] for m in got_before if m["type"] == "thought_added"]
    assert sorted(t.split(" ")[0] for t in thoughts) == ["a1", "a2", "a3", "g1", "g2"]
    team_statuses = {
        team: [m["data"]["status"] for m in got_before
               if m.get("team") == team and m["type"] == "status_change"]
        for team in ("anthropic", "google")
    }
    assert team_statuses == {
        "anthropic": ["thinking", "generating", "complete"],
        "google": ["thinking", "generating", "complete"],
    }
    assert before.close_code == 1000 and before.close_reason == "job finished"


async def test_since_returns_only_later_events(server: Running) -> None:
    async with server.client() as client:
        await client.create("a counter", job_id="since-job")
        async for _ in client.events("since-job"):
            pass
        job = await client.get("since-job")
    ws = await ws_connect(server.ws_url("since-job", "since=4"))
    messages = await read_until_closed(ws)
    assert messages[0]["type"] == "connected" and messages[0]["data"]["since"] == 4
    assert [m["seq"] for m in job_events(messages)] == list(range(5, job.last_sequence + 1))


async def test_many_subscribers_each_get_every_event_once(server: Running) -> None:
    clients = [await ws_connect(server.ws_url("fan")) for _ in range(20)]
    async with server.client() as client:
        await client.create("a search bar", job_id="fan")
    results = await asyncio.gather(*(read_until_closed(ws) for ws in clients))
    sequences = [[m["seq"] for m in job_events(r)] for r in results]
    assert all(s == sequences[0] for s in sequences)
    # Not vacuous: a gateway that sent nothing would give [] == list(range(1, 1)).
    assert len(sequences[0]) > 3
    assert sequences[0] == list(range(1, len(sequences[0]) + 1))
    assert job_events(results[0])[-1]["data"]["status"] == "succeeded"


async def test_unknown_job_waits_and_answers_ping(server: Running) -> None:
    """The guide's `wscat -c .../ws/orchestrate/test-job-id` then `ping`."""
    async with connect(server.ws_url("test-job-id")) as ws:
        connected = json.loads(await ws.recv())
        assert connected["type"] == "connected"
        await ws.send("ping")
        pong = json.loads(await ws.recv())
        assert pong["type"] == "pong"
        import re

        assert re.match(TIMESTAMP, pong["timestamp"])
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await ws.recv())["type"] == "pong"
        # Protocol-level keepalive ping too: the waiter resolves only when the
        # server's pong echoes this payload (else TimeoutError), and the
        # connection still answers afterwards.
        await asyncio.wait_for(await ws.ping(b"keepalive"), 30)
        await ws.send("ping")
        assert json.loads(await ws.recv())["type"] == "pong"


async def test_unknown_messages_get_an_error_and_the_connection_stays(server: Running) -> None:
    async with connect(server.ws_url("j1")) as ws:
        await ws.recv()  # connected
        for bad in ("hello", '{"type":"subscribe"}', "{not json", b"\x00\x01", "[]"):
            await ws.send(bad)
            reply = json.loads(await ws.recv())
            assert reply["type"] == "error"
            assert "unknown message" in reply["data"]["error"]
        await ws.send("ping")
        assert json.loads(await ws.recv())["type"] == "pong"


async def test_oversized_frame_is_refused(server: Running) -> None:
    async with connect(server.ws_url("j2"), max_size=None) as ws:
        await ws.recv()
        await ws.send("x" * (MAX_CLIENT_FRAME + 1))
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 30)
        assert ws.close_code == 1009
    # The server is still fine for others.
    async with connect(server.ws_url("j3")) as other:
        assert json.loads(await other.recv())["type"] == "connected"


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/ws/orchestrate/", 400),
        ("/ws/orchestrate/bad%20id", 400),
        ("/ws/orchestrate/" + "x" * 65, 400),
        ("/ws/orchestrate/a/b", 400),
        ("/ws/orchestrate/ok?since=-1", 400),
        ("/ws/orchestrate/ok?since=abc", 400),
        ("/ws/orchestrate/ok?since=1&since=2", 400),
        ("/ws/elsewhere/ok", 404),
        ("/nowhere", 404),  # ("/" is the Command Center's page)
    ],
)
async def test_malformed_paths_are_refused_at_the_handshake(
    server: Running, path: str, status: int
) -> None:
    with pytest.raises(InvalidStatus) as info:
        await ws_connect(f"ws://127.0.0.1:{server.server.ws_port}{path}")
    assert info.value.response.status_code == status
    assert info.value.response.body  # says what is wrong


async def test_snapshot_and_health_over_http(server: Running) -> None:
    async with server.client() as client:
        await client.create("a login form", job_id="snap")
        async for _ in client.events("snap"):
            pass
    base = f"http://127.0.0.1:{server.server.ws_port}"

    def fetch(path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(base + path, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    status, body = await asyncio.to_thread(fetch, "/healthz")
    assert status == 200
    status, body = await asyncio.to_thread(fetch, "/api/jobs/snap")
    assert status == 200
    snapshot = json.loads(body)
    assert snapshot["state"] == "succeeded" and snapshot["last_sequence"] > 0
    assert {t["team"]: t["status"] for t in snapshot["teams"]} == {
        "anthropic": "complete", "google": "complete"}
    assert "LoginForm" in snapshot["teams"][0]["code"]
    status, body = await asyncio.to_thread(fetch, "/api/jobs/nope")
    assert status == 404 and "nope" in json.loads(body)["error"]
    status, body = await asyncio.to_thread(fetch, "/api/jobs/bad%20id")
    assert status == 400


@pytest.mark.parametrize(
    ("method", "path", "status", "allow"),
    [
        ("DELETE", "/healthz", 405, "GET"),
        ("POST", "/api/jobs/snap", 405, "GET, OPTIONS"),  # OPTIONS: the CORS preflight
        ("PUT", "/ws/orchestrate/ok", 405, "GET"),
        ("DELETE", "/nowhere", 404, None),
        ("GET", "/api/jobsx", 404, None),
    ],
)
async def test_routes_answer_405_for_a_wrong_method_and_404_for_an_unknown_path(
    server: Running, method: str, path: str, status: int, allow: str | None
) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.server.ws_port}{path}", method=method
    )

    def fetch() -> urllib.error.HTTPError:
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=5)
        return info.value

    error = await asyncio.to_thread(fetch)
    assert error.code == status
    assert error.headers.get("Allow") == allow
    assert error.read().strip()  # says what is wrong
