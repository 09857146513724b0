"""The guide's message format (../shared/streaming-guide.md, "Message Format"), held
field by field against a real server; thought ids stable everywhere, old files included."""

from __future__ import annotations

import json
import re
import sqlite3
import uuid
from pathlib import Path
from typing import Any

from chimera.events import TeamName, legacy_thought_id, parse_timestamp
from tests.conftest import (
    Running,
    StartServer,
    grpcurl,
    job_events,
    read_until_closed,
    ws_connect,
)
from tests.doubles import ScriptedProvider, factory
from tests.http_raw import http_request

SERVICE = "chimera.v1.JobService"
DATA = Path(__file__).parent / "data"
ISO_MS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

# The guide's examples, copied as they are written there.
GUIDE: dict[str, dict[str, Any]] = {
    "connected": {
        "type": "connected",
        "job_id": "uuid-here",
        "timestamp": "2025-12-01T10:00:00.000Z",
    },
    "status_change": {
        "type": "status_change",
        "team": "anthropic",
        "data": {"status": "thinking"},
        "timestamp": "2025-12-01T10:00:01.000Z",
    },
    "thought_added": {
        "type": "thought_added",
        "team": "anthropic",
        "data": {
            "id": "thought-uuid",
            "text": "Analyzing the brief...",
            "timestamp": "2025-12-01T10:00:02.000Z",
            "team": "anthropic",
        },
        "timestamp": "2025-12-01T10:00:02.000Z",
    },
    "code_generated": {
        "type": "code_generated",
        "team": "anthropic",
        "data": {"code": "export function MyComponent() {...}", "token_count": 1500},
        "timestamp": "2025-12-01T10:00:30.000Z",
    },
    "error": {
        "type": "error",
        "team": "anthropic",
        "data": {"error": "API rate limit exceeded", "status": "error"},
        "timestamp": "2025-12-01T10:00:15.000Z",
    },
    "pong": {"type": "pong", "timestamp": "2025-12-01T10:00:00.000Z"},
}


def assert_like(got: dict[str, Any], example: dict[str, Any], where: str) -> None:
    """Every field the guide's example has is in ``got``, with the same JSON type
    (timestamps in the same ISO-ms-Z form); fields beyond the example are allowed."""
    for key, value in example.items():
        assert key in got, f"{where}: {key!r} missing from {got}"
        if isinstance(value, dict):
            assert isinstance(got[key], dict), f"{where}.{key}: {got[key]!r}"
            assert_like(got[key], value, f"{where}.{key}")
        else:
            assert type(got[key]) is type(value), f"{where}.{key}: {got[key]!r} vs {value!r}"
        if key == "timestamp":
            assert ISO_MS_Z.match(got[key]), f"{where}.timestamp: {got[key]!r}"
    if "type" in example:
        assert got["type"] == example["type"]
    if "team" in got:
        assert got["team"] in ("anthropic", "google")


def thought_ids(messages: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(id, team, text) of each thought_added message, in order."""
    return [
        (m["data"]["id"], m["team"], m["data"]["text"])
        for m in messages if m["type"] == "thought_added"
    ]


async def test_every_message_type_has_the_guides_fields(start_server: StartServer) -> None:
    server = await start_server(
        factory({
            TeamName.ANTHROPIC: lambda: ScriptedProvider(
                ["Analyzing the brief"], fail_with="API rate limit exceeded"
            ),
            TeamName.GOOGLE: lambda: ScriptedProvider(
                ["plan", "fields"], code="export const A = 1;"
            ),
        })
    )
    ws = await ws_connect(server.ws_url("guide-job"))
    connected = json.loads(await ws.recv())
    await ws.send("ping")
    pong = json.loads(await ws.recv())
    async with server.client() as client:
        await client.create("Create a login form with email and password", job_id="guide-job")
    messages = await read_until_closed(ws)

    assert_like(connected, GUIDE["connected"], "connected")
    assert connected["job_id"] == "guide-job"
    assert_like(pong, GUIDE["pong"], "pong")
    events = job_events(messages)
    seen = {m["type"] for m in events}
    # The guide's types, and the one Chimera adds (not in the guide: checked below).
    assert seen == {"status_change", "thought_added", "code_generated", "error", "code_delta"}
    deltas = [m for m in events if m["type"] == "code_delta"]
    assert [(m["team"], m["data"]) for m in deltas] == [
        ("google", {"offset": 0, "text": "export const A = 1;"})
    ]
    for message in events:
        if message["type"] == "code_delta":
            continue
        example = dict(GUIDE[message["type"]])
        if message["type"] == "status_change" and message["data"]["status"] in (
            "running", "succeeded", "failed", "cancelled"
        ):
            # The job's own status: `team?` is optional in the guide's WSMessage.
            assert "team" not in message
            del example["team"]
        assert_like(message, example, f"seq {message['seq']}")
        assert message["job_id"] == "guide-job"  # additive fields
    for message in events:
        data = message["data"]
        if message["type"] == "thought_added":
            uuid.UUID(data["id"])
            assert data["team"] == message["team"]
            assert data["timestamp"] == message["timestamp"]
            assert set(data) == {"id", "text", "timestamp", "team"}
        elif message["type"] == "code_generated":
            assert data["code"] == "export const A = 1;" and data["token_count"] == 42
            assert data["language"] == "tsx"
        elif message["type"] == "error":
            assert data == {"error": "API rate limit exceeded", "status": "error"}
    assert [t[2].split(" (")[0] for t in thought_ids(events) if t[1] == "google"] == [
        "plan", "fields",
    ]
    ids = [t[0] for t in thought_ids(events)]
    assert len(set(ids)) == len(ids) == 3


Thoughts = dict[str, list[tuple[str, str]]]  # team -> (thought id, text), in order


async def thoughts_everywhere(server: Running, job_id: str) -> dict[str, Thoughts]:
    """The job's thoughts as each interface shows them."""
    views: dict[str, Thoughts] = {}
    replay = job_events(await read_until_closed(await ws_connect(server.ws_url(job_id))))
    views["websocket replay"] = {}
    for i, team, text in thought_ids(replay):
        views["websocket replay"].setdefault(team, []).append((i, text))

    code, out, err = await grpcurl(
        server.grpc_target, f"{SERVICE}/GetJob", data={"job_id": job_id, "view": "JOB_VIEW_FULL"}
    )
    assert code == 0, err
    job = json.loads(out)["job"]
    views["GetJob"] = {
        run["team"].removeprefix("TEAM_").lower(): [(t["id"], t["text"]) for t in run["thoughts"]]
        for run in job["teams"] if run.get("thoughts")
    }
    stamps = [parse_timestamp(t["timestamp"]) for run in job["teams"] for t in run["thoughts"]]

    reply = await http_request(server.server.ws_port, "GET", f"/api/jobs/{job_id}?view=full")
    assert reply.status == 200, reply.body
    snapshot = reply.json()
    views["snapshot"] = {
        run["team"]: [(t["id"], t["text"]) for t in run["thoughts"]]
        for run in snapshot["teams"] if run["thoughts"]
    }
    assert stamps == [
        parse_timestamp(t["timestamp"]) for run in snapshot["teams"] for t in run["thoughts"]
    ]

    code, out, err = await grpcurl(
        server.grpc_target, f"{SERVICE}/StreamJobEvents", data={"job_id": job_id}
    )
    assert code == 0, err
    decoder, pos, text = json.JSONDecoder(), 0, out.strip()
    views["StreamJobEvents"] = {}
    while pos < len(text):
        obj, pos = decoder.raw_decode(text, pos)
        event = obj["event"]
        if "thought_added" in event:
            team = event["team"].removeprefix("TEAM_").lower()
            thought = event["thought_added"]
            views["StreamJobEvents"].setdefault(team, []).append((thought["id"], thought["text"]))
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return views


async def test_thought_ids_are_the_same_everywhere_and_after_a_restart(
    start_server: StartServer, tmp_path: Path
) -> None:
    db = str(tmp_path / "stable.db")
    server = await start_server(db=db)
    async with server.client() as client:
        await client.create("a counter", job_id="stable")
        live = await read_until_closed(await ws_connect(server.ws_url("stable")))
    live_ids = [i for i, _, _ in thought_ids(live)]
    assert live_ids and len(set(live_ids)) == len(live_ids)
    before = await thoughts_everywhere(server, "stable")
    await server.stop()
    restarted = await start_server(db=db)
    after = await thoughts_everywhere(restarted, "stable")
    reference = before["websocket replay"]
    assert sorted(i for pairs in reference.values() for i, _ in pairs) == sorted(live_ids)
    for name, seen in [*before.items(), *(("restarted " + k, v) for k, v in after.items())]:
        assert seen == reference, name


async def test_databases_from_before_thought_ids_serve_the_new_shape(
    start_server: StartServer, tmp_path: Path
) -> None:
    """Files written by Chimera before this change (schema 1: snapshots; schema 2:
    deltas), each holding one finished job with three text-only thoughts."""
    for name in ("schema1", "schema2"):
        db = tmp_path / f"{name}.db"
        dump = (DATA / f"{name}_thoughts_without_ids.sql").read_text()
        assert '"data":{"thought":' in dump  # the old shape
        with sqlite3.connect(db) as conn:
            conn.executescript(dump)
        conn.close()
        server = await start_server(db=str(db))
        first = await thoughts_everywhere(server, "old-job")
        await server.stop()
        again = await thoughts_everywhere(await start_server(db=str(db)), "old-job")
        expected = [
            (legacy_thought_id("old-job", seq), text)
            for seq, text in zip(
                (3, 4, 5),
                (
                    "Reading the brief: “a counter”. This calls for a Counter component.",
                    "One number in state, with buttons to increment, decrement and reset.",
                    "React with TypeScript, function components and hooks; no outside "
                    "libraries.",
                ),
                strict=True,
            )
        ]
        for view, seen in [*first.items(), *again.items()]:
            assert seen == {"anthropic": expected}, (name, view)
    # The old frames were rewritten once, in the guide's shape, with the frame's timestamp.
    with sqlite3.connect(tmp_path / "schema2.db") as conn:
        frames = [json.loads(f) for (f,) in conn.execute(
            "SELECT frame FROM events WHERE thought IS NOT NULL ORDER BY seq"
        )]
    conn.close()
    for frame in frames:
        assert frame["data"]["timestamp"] == frame["timestamp"]
        assert frame["data"]["team"] == "anthropic"
        assert_like(frame, GUIDE["thought_added"], "migrated")
