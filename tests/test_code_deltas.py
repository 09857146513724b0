"""``code_delta``: each team's code while it is written, on every plane.

The invariant every test here checks: per team, the deltas spliced in ``seq``
order (:func:`chimera.events.splice`; with no restart that is joined in offset
order) are exactly the team's ``code_generated`` code, byte for byte. The real
providers run their real SDKs against the local fakes (``chimera.fakes``),
which stream the answer in many chunks with prose before and after its block.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

from chimera.events import TeamName, splice
from chimera.fakes import anthropic_api, gemini_api
from chimera.fakes.server import Pause
from chimera.providers.registry import Mode, Providers, ProviderSettings
from chimera.v1 import jobs_pb2 as pb
from chimera.wire import TEAM_FROM_PB
from tests.conftest import (
    Running,
    StartServer,
    http_answer,
    job_events,
    read_until_closed,
    until,
    ws_connect,
)
from tests.redis_fixture import redis_server


async def wait_for_subscribers(server: Running, job_id: str, count: int) -> None:
    """Until ``count`` subscribers wait for ``job_id`` (the broadcaster says so)."""
    broadcaster = server.server.broadcaster
    await until(lambda: broadcaster.subscriber_count(job_id) >= count)

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


# -- the real SDKs against the local fakes --------------------------------------

KEY = "sk-test-code-deltas-0123456789"


@dataclass
class Fakes:
    """Both fake APIs, answering with ``answer`` as the tests script it."""

    anthropic: anthropic_api.FakeAnthropicAPI
    gemini: gemini_api.FakeGeminiAPI

    def providers(self) -> Providers:
        settings = ProviderSettings(
            modes=dict.fromkeys(TeamName, Mode.REAL),
            options={
                TeamName.ANTHROPIC: {"base_url": self.anthropic.url},
                TeamName.GOOGLE: {"base_url": self.gemini.url},
            },
        )
        return Providers(settings, environ={"ANTHROPIC_API_KEY": KEY, "GEMINI_API_KEY": KEY})

    def answer(
        self, answer: str, *, chars: int | None = None, hold: asyncio.Event | None = None
    ) -> None:
        """Both fakes stream ``answer`` (``chars`` characters a chunk, else word by
        word); with ``hold``, they stop halfway through its code until it is set."""
        events = anthropic_api.message_events(answer=answer, answer_chars=chars)
        chunks = gemini_api.response_chunks(
            answer=answer, answer_chars=chars, words_per_chunk=1
        )
        if hold is not None:
            events = _held(events, '"text_delta"', hold)
            chunks = _held(chunks, "{", hold)
        self.anthropic.script(anthropic_api.stream_reply(events))
        self.gemini.script(gemini_api.stream_reply(chunks))


def _held(items: list[Any], marker: str, hold: asyncio.Event) -> list[Any]:
    """``items`` with a pause until ``hold`` halfway through the answer's pieces."""
    answer = [i for i, item in enumerate(items)
              if marker in (item.data if isinstance(item, anthropic_api.SSE) else json.dumps(item))
              and "thought" not in json.dumps(getattr(item, "data", item))]
    middle = answer[len(answer) // 2]
    return [*items[:middle], Pause(0, until=hold), *items[middle:]]


@pytest.fixture
async def fakes() -> AsyncIterator[Fakes]:
    async with (
        anthropic_api.FakeAnthropicAPI(api_key=KEY) as anthropic,
        gemini_api.FakeGeminiAPI(api_key=KEY) as gemini,
    ):
        yield Fakes(anthropic, gemini)


async def run_real(
    start_server: StartServer, fakes: Fakes, job_id: str, **config: Any
) -> tuple[Running, list[dict[str, Any]]]:
    providers = fakes.providers()
    server = await start_server(providers, **config)
    ws = await ws_connect(server.ws_url(job_id))
    async with server.client() as client:
        await client.create(LOGIN, job_id=job_id)
    events = job_events(await read_until_closed(ws))
    await providers.aclose()
    return server, events


async def test_real_teams_stream_their_code_and_not_the_prose(
    start_server: StartServer, fakes: Fakes
) -> None:
    """The fakes stream the answer word by word, prose before and after the block."""
    assert anthropic_api.DEFAULT_ANSWER.startswith("Here is the component.")
    assert anthropic_api.DEFAULT_ANSWER.endswith("does not submit anywhere yet.\n")
    fakes.answer(anthropic_api.DEFAULT_ANSWER)
    _, events = await run_real(start_server, fakes, "real")

    for team in ("anthropic", "google"):
        assert final_code(events, team) == anthropic_api.DEFAULT_CODE, team
        assert joined(events, team) == anthropic_api.DEFAULT_CODE, team
        assert_contiguous(events, team)
        assert len(deltas_of(events, team)) >= 2, team  # as it came, not all at the end


async def test_5000_one_character_chunks_make_at_most_a_few_hundred_deltas(
    start_server: StartServer, fakes: Fakes
) -> None:
    """A model streaming one character at a time: 5,000 chunks per team, coalesced
    to at most one delta per 50 ms or per 512 characters."""
    code = "\n".join(f"export const line{i:04d} = {i};" for i in range(180))
    answer = f"Sure.\n\n```ts\n{code}\n```\n\nThat is all.\n"
    assert len(answer) >= 5000
    fakes.answer(answer, chars=1)
    _, events = await run_real(start_server, fakes, "flood")

    for team in ("anthropic", "google"):
        deltas = deltas_of(events, team)
        assert final_code(events, team) == code, team
        assert joined(events, team) == code, team
        assert_contiguous(events, team)
        assert 1 < len(deltas) <= 300, (team, len(deltas))
        assert all(len(d["data"]["text"]) <= 512 + 1 for d in deltas), team


async def until_deltas(ws: ClientConnection, teams: set[str]) -> list[dict[str, Any]]:
    """Job events from ``ws`` until a code delta of each of ``teams`` has come."""
    events: list[dict[str, Any]] = []
    waiting = set(teams)
    while waiting:
        message = json.loads(await ws.recv())
        if "seq" in message:
            events.append(message)
            if message["type"] == "code_delta":
                waiting.discard(message["team"])
    return events


async def test_mid_code_the_snapshot_shows_the_code_so_far_and_a_resume_gets_exactly_the_rest(
    start_server: StartServer, fakes: Fakes
) -> None:
    """Both fakes stop halfway through the code: the HTTP snapshot and GetJob show
    each team's code so far (a part of the final code, ``code`` still empty); a
    subscriber that leaves then and resumes with ``since`` gets exactly the events
    it missed, deltas included, and its deltas join to the final code."""
    hold = asyncio.Event()
    fakes.answer(anthropic_api.DEFAULT_ANSWER, hold=hold)
    providers = fakes.providers()
    server = await start_server(providers)
    ws = await ws_connect(server.ws_url("held"))
    json.loads(await ws.recv())
    async with server.client() as client:
        await client.create(LOGIN, job_id="held")
        before = await until_deltas(ws, {"anthropic", "google"})
        await ws.close()  # leaves mid-code
        final = anthropic_api.DEFAULT_CODE
        status, body = await asyncio.to_thread(
            http_answer, f"http://127.0.0.1:{server.server.ws_port}/api/jobs/held"
        )
        assert status == 200
        snapshot = {t["team"]: t for t in json.loads(body)["teams"]}
        job = await client.get("held")
        for run in job.teams:
            team = TEAM_FROM_PB[run.team].value
            for so_far, code in ((run.code_so_far, run.code),
                                 (snapshot[team]["code_so_far"], snapshot[team]["code"])):
                assert code == "", team
                assert 0 < len(so_far) < len(final) and final.startswith(so_far), team
        assert job.state == pb.JOB_STATE_RUNNING
        hold.set()
        since = before[-1]["seq"]
        resumed = job_events(await read_until_closed(await ws_connect(
            server.ws_url("held", f"since={since}"))))
        everything = job_events(await read_until_closed(await ws_connect(server.ws_url("held"))))
        done = await client.get("held")
    await providers.aclose()

    assert [e["seq"] for e in everything] == list(range(1, done.last_sequence + 1))
    assert before + resumed == everything  # nothing missed, nothing twice
    assert deltas_of(resumed, "anthropic") and deltas_of(resumed, "google")
    for team in ("anthropic", "google"):
        assert joined(before + resumed, team) == final == final_code(everything, team)
    for run in done.teams:
        assert run.code == run.code_so_far == final


async def test_grpc_and_websocket_carry_the_same_deltas_and_opting_out_gets_none(
    start_server: StartServer,
) -> None:
    """Four subscribers from the start (live, then to the end): WebSocket and gRPC,
    each with and without deltas. The same deltas on both planes; ``?deltas=0`` and
    ``exclude_code_deltas`` get every other event with its own seq (gaps where the
    deltas were), and a resume after the last seq they got needs nothing more."""
    server = await start_server()
    full_ws = await ws_connect(server.ws_url("both"))
    lean_ws = await ws_connect(server.ws_url("both", "deltas=0"))
    async with server.client() as client:

        async def grpc_events(deltas: bool) -> list[pb.JobEvent]:
            return [e async for e in client.events("both", deltas=deltas)]

        full_grpc = asyncio.create_task(grpc_events(True))
        lean_grpc = asyncio.create_task(grpc_events(False))
        await wait_for_subscribers(server, "both", 4)
        await client.create(LOGIN, job_id="both")
        full = job_events(await read_until_closed(full_ws))
        lean = job_events(await read_until_closed(lean_ws))
        grpc_full, grpc_lean = await full_grpc, await lean_grpc
        # Replays filter the same way as live delivery.
        replay_lean = job_events(await read_until_closed(
            await ws_connect(server.ws_url("both", "deltas=0"))))
        last = lean[-1]["seq"]

    ws_deltas = [(e["seq"], e["team"], e["data"]["offset"], e["data"]["text"])
                 for e in full if e["type"] == "code_delta"]
    grpc_deltas = [(e.sequence, TEAM_FROM_PB[e.team].value, e.code_delta.offset,
                    e.code_delta.text) for e in grpc_full if e.WhichOneof("kind") == "code_delta"]
    assert ws_deltas and ws_deltas == grpc_deltas
    assert [e.sequence for e in grpc_full] == [e["seq"] for e in full]
    for team in ("anthropic", "google"):
        assert joined(full, team) == final_code(full, team)

    others = [e for e in full if e["type"] != "code_delta"]
    assert lean == replay_lean == others  # the same frames, the same seqs, gaps included
    assert not any(e.WhichOneof("kind") == "code_delta" for e in grpc_lean)
    assert [e.sequence for e in grpc_lean] == [e["seq"] for e in others]
    assert [e["seq"] for e in lean] != list(range(1, len(lean) + 1))  # it has gaps
    assert lean[-1]["seq"] == full[-1]["seq"] and last == full[-1]["seq"]


@pytest.mark.parametrize("query", ["deltas=2", "deltas=", "deltas=0&deltas=1", "deltas=false"])
async def test_a_bad_deltas_parameter_is_refused_with_why(server: Running, query: str) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await ws_connect(server.ws_url("any", query))
    assert refused.value.response.status_code == 400
    body = refused.value.response.body or b""
    assert b"deltas must be one value, 0 (no code_delta events) or 1" in body


async def test_in_a_cluster_another_node_streams_the_deltas_and_shows_the_code_so_far(
    start_server: StartServer, fakes: Fakes, tmp_path: Path
) -> None:
    """Two nodes on one Redis: the job runs on the first; the second streams its
    deltas (over Redis) and answers GetJob with the code so far from Redis."""
    hold = asyncio.Event()
    fakes.answer(anthropic_api.DEFAULT_ANSWER, hold=hold)
    providers = fakes.providers()
    async with redis_server(tmp_path / "redis") as redis:
        runner = await start_server(providers, redis_url=redis.url)
        other = await start_server(redis_url=redis.url)
        ws = await ws_connect(other.ws_url("shared"))
        json.loads(await ws.recv())
        async with runner.client() as client:
            await client.create(LOGIN, job_id="shared")
        before = await until_deltas(ws, {"anthropic", "google"})
        async with other.client() as client:
            job = await client.get("shared")
            for run in job.teams:
                final = anthropic_api.DEFAULT_CODE
                assert 0 < len(run.code_so_far) < len(final) and final.startswith(run.code_so_far)
                assert run.code == ""
            hold.set()
            events = before + job_events(await read_until_closed(ws))
            done = await client.get("shared")
        await providers.aclose()
        await other.stop()
        await runner.stop()
    assert [e["seq"] for e in events] == list(range(1, done.last_sequence + 1))
    for team in ("anthropic", "google"):
        assert joined(events, team) == final_code(events, team) == anthropic_api.DEFAULT_CODE
    for run in done.teams:
        assert run.code_so_far == run.code == anthropic_api.DEFAULT_CODE
