"""``code_delta``: each team's code while it is written, on every plane.

The invariant every test here checks: per team, the deltas spliced in ``seq``
order (:func:`chimera.events.splice`; with no restart that is joined in offset
order) are exactly the team's ``code_generated`` code, byte for byte. The real
providers run their real SDKs against the local fakes (``chimera.fakes``),
which stream the answer in many chunks with prose before and after its block.
"""

from __future__ import annotations

import json
from typing import Any

from chimera.events import splice
from tests.conftest import StartServer, job_events, read_until_closed, ws_connect

LOGIN = "Create a login form with email and password"


def deltas_of(events: list[dict[str, Any]], team: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "code_delta" and e["team"] == team]


def joined(events: list[dict[str, Any]], team: str) -> str:
    """``team``'s code as its deltas make it, spliced in the order they came."""
    code = ""
    for event in deltas_of(events, team):
        code = splice(code, event["data"]["offset"], event["data"]["text"])
    return code


def final_code(events: list[dict[str, Any]], team: str) -> str:
    (code,) = [e["data"]["code"] for e in events
               if e["type"] == "code_generated" and e["team"] == team]
    return str(code)


def assert_contiguous(events: list[dict[str, Any]], team: str) -> None:
    """No restart: each delta starts where the last one ended (joined in offset order)."""
    offset = 0
    for event in deltas_of(events, team):
        assert event["data"]["offset"] == offset, event
        offset += len(event["data"]["text"])


async def test_simulated_teams_stream_their_code_over_the_websocket(
    start_server: StartServer,
) -> None:
    server = await start_server()
    ws = await ws_connect(server.ws_url("sim"))
    json.loads(await ws.recv())  # connected
    async with server.client() as client:
        await client.create(LOGIN, job_id="sim")
    events = job_events(await read_until_closed(ws))

    for team in ("anthropic", "google"):
        deltas = deltas_of(events, team)
        assert len(deltas) > 3, team  # a few lines at a time, not all at the end
        assert joined(events, team) == final_code(events, team), team
        assert_contiguous(events, team)
        # Written while the team is generating: after "generating", before the code.
        seqs = [e["seq"] for e in events if e.get("team") == team]
        generating = next(e["seq"] for e in events if e.get("team") == team
                          and e["data"].get("status") == "generating")
        code_seq = next(e["seq"] for e in events if e.get("team") == team
                        and e["type"] == "code_generated")
        assert all(generating < d["seq"] < code_seq for d in deltas), seqs
        assert set(deltas[0]) == {"type", "team", "data", "timestamp", "job_id", "seq"}
    assert final_code(events, "anthropic") != final_code(events, "google")
