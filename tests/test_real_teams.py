"""Both real teams (the real SDKs) inside the whole server, against the local fake APIs."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import AsyncIterator

import pytest

from chimera.events import TeamName
from chimera.fakes import anthropic_api, gemini_api
from chimera.fakes.briefed import FAKE_KEY, fake_apis
from chimera.providers.registry import Mode, Providers, ProviderSettings
from chimera.v1 import jobs_pb2 as pb
from tests.conftest import (
    StartServer,
    job_events,
    read_until_closed,
    wait_for_sequence,
    ws_connect,
)

SECRET = "sk-test-SECRET-never-shown-0123456789"


@pytest.fixture
async def apis() -> AsyncIterator[tuple[anthropic_api.FakeAnthropicAPI, gemini_api.FakeGeminiAPI]]:
    async with (
        anthropic_api.FakeAnthropicAPI(api_key=SECRET) as anthropic,
        gemini_api.FakeGeminiAPI(api_key=SECRET) as gemini,
    ):
        yield anthropic, gemini


def real_providers(
    anthropic: anthropic_api.FakeAnthropicAPI, gemini: gemini_api.FakeGeminiAPI
) -> Providers:
    settings = ProviderSettings(
        modes=dict.fromkeys(TeamName, Mode.REAL),
        options={
            TeamName.ANTHROPIC: {"base_url": anthropic.url},
            TeamName.GOOGLE: {"base_url": gemini.url},
        },
    )
    return Providers(settings, environ={"ANTHROPIC_API_KEY": SECRET, "GEMINI_API_KEY": SECRET})


async def test_both_real_teams_stream_through_the_server(
    start_server: StartServer,
    apis: tuple[anthropic_api.FakeAnthropicAPI, gemini_api.FakeGeminiAPI],
) -> None:
    providers = real_providers(*apis)
    server = await start_server(providers)
    ws = await ws_connect(server.ws_url("real"))
    async with server.client() as client:
        await client.create("Create a login form", job_id="real")
        messages = job_events(await read_until_closed(ws))
        job = await client.get("real")
    await providers.aclose()
    assert job.state == pb.JOB_STATE_SUCCEEDED
    runs = {r.team: r for r in job.teams}
    assert runs[pb.TEAM_ANTHROPIC].model == "claude-sonnet-4-6"
    assert runs[pb.TEAM_GOOGLE].model == "gemini-2.5-flash"
    assert runs[pb.TEAM_ANTHROPIC].token_count == anthropic_api.DEFAULT_OUTPUT_TOKENS
    for run in runs.values():
        assert run.status == pb.TEAM_STATUS_COMPLETE
        assert "export default function LoginForm" in run.code and run.language == "tsx"
        assert run.thoughts
    statuses = [
        (m["team"], m["data"]["status"]) for m in messages
        if m["type"] == "status_change" and "team" in m
    ]
    for team in ("anthropic", "google"):
        assert [s for t, s in statuses if t == team] == ["thinking", "generating", "complete"]
    # The prompt reached each API with the brief, and thinking was asked for.
    anthropic, gemini = apis
    sent = anthropic.requests[0].json()
    assert sent["stream"] is True and sent["thinking"]["type"] == "enabled"
    assert "Create a login form" in json.dumps(sent["messages"])
    assert gemini_api.thinking_config(gemini.requests[0])["includeThoughts"] is True


async def test_rate_limited_team_errors_and_the_other_completes(
    start_server: StartServer,
    apis: tuple[anthropic_api.FakeAnthropicAPI, gemini_api.FakeGeminiAPI],
    caplog: pytest.LogCaptureFixture,
) -> None:
    anthropic, gemini = apis
    # A whole thinking block, then the connection drops; every retry is refused with 429.
    events = anthropic_api.message_events()
    thought_done = anthropic_api.first(events, "content_block_stop") + 1
    anthropic.script(
        anthropic_api.stream_reply(events[:thought_done], ending="drop"),
        *[anthropic_api.error_reply(429, "rate_limit_error", retry_after="0")] * 10,
    )
    settings = ProviderSettings(
        modes=dict.fromkeys(TeamName, Mode.REAL),
        options={
            TeamName.ANTHROPIC: {"base_url": anthropic.url},
            TeamName.GOOGLE: {"base_url": gemini.url},
        },
    )
    providers = Providers(
        settings, environ={"ANTHROPIC_API_KEY": SECRET, "GEMINI_API_KEY": SECRET}
    )
    server = await start_server(providers)
    caplog.set_level(logging.DEBUG)
    ws = await ws_connect(server.ws_url("limited"))
    async with server.client() as client:
        await client.create("a counter", job_id="limited")
        raw = await read_until_closed(ws)
        job = await client.get("limited")
    await providers.aclose()
    messages = job_events(raw)
    errors = [m for m in messages if m["type"] == "error"]
    assert [e["data"] for e in errors] == [{"error": "API rate limit exceeded", "status": "error"}]
    assert errors[0]["team"] == "anthropic"
    runs = {r.team: r for r in job.teams}
    assert runs[pb.TEAM_ANTHROPIC].status == pb.TEAM_STATUS_ERROR
    assert runs[pb.TEAM_ANTHROPIC].thoughts  # streamed before the drop, kept
    assert runs[pb.TEAM_GOOGLE].status == pb.TEAM_STATUS_COMPLETE
    assert job.state == pb.JOB_STATE_SUCCEEDED
    # The key is in no event and no log line.
    assert SECRET not in json.dumps(raw)
    assert SECRET not in caplog.text


async def test_cancelling_a_job_closes_the_provider_connections(
    start_server: StartServer,
    apis: tuple[anthropic_api.FakeAnthropicAPI, gemini_api.FakeGeminiAPI],
) -> None:
    anthropic, gemini = apis
    # Both APIs stream a little, then stall until the client closes the connection.
    anthropic.default = anthropic_api.stream_reply(
        anthropic_api.message_events()[:6], ending="hang"
    )
    gemini.default = gemini_api.stream_reply(gemini_api.response_chunks()[:2], ending="hang")
    providers = real_providers(anthropic, gemini)
    server = await start_server(providers)
    async with server.client() as client:
        await client.create("a counter", job_id="stalled")
        await wait_for_sequence(client, "stalled", 3)  # both teams thinking
        await anthropic.wait_for_requests(1)
        await gemini.wait_for_requests(1)
        job = await asyncio.wait_for(client.cancel("stalled"), 30)
    assert job.state == pb.JOB_STATE_CANCELLED
    await anthropic.wait_closed(anthropic.requests[0], within=10)
    await gemini.wait_closed(gemini.requests[0], within=10)
    await providers.aclose()


async def run_chimera(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chimera", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**{k: v for k, v in os.environ.items() if "API_KEY" not in k}, **env,
             "COLUMNS": "200"},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_demo_with_fake_apis_streams_through_the_real_sdks() -> None:
    code, out, err = await run_chimera(
        "demo", "--fake-apis", "--sim-delay", "0", "Build a todo list", env={}
    )
    assert code == 0, err
    assert "team anthropic: real (claude-sonnet-4-6 via http://127.0.0.1:" in err
    assert "team google: real (gemini-2.5-flash via http://127.0.0.1:" in err
    assert "[anthropic] thinking (model: claude-sonnet-4-6)" in out
    assert "[google] thinks:" in out and "TodoList" in out
    assert FAKE_KEY not in out + err


async def test_demo_picks_real_per_key_from_the_environment() -> None:
    """ANTHROPIC_API_KEY + ANTHROPIC_BASE_URL set: that team is real, the other simulated."""
    async with fake_apis(0) as fakes:
        code, out, err = await run_chimera(
            "demo", "--sim-delay", "0", "a login form",
            env={"ANTHROPIC_API_KEY": fakes.key, "ANTHROPIC_BASE_URL": fakes.anthropic_url},
        )
    assert code == 0, err
    assert f"team anthropic: real (claude-sonnet-4-6 via {fakes.anthropic_url})" in err
    assert "team google: simulated (GOOGLE_API_KEY or GEMINI_API_KEY not set)" in err
    assert "[anthropic] thinking (model: claude-sonnet-4-6)" in out
    assert "[google] thinking (model: simulated)" in out


async def test_real_without_a_key_refuses_to_start() -> None:
    code, _, err = await run_chimera("demo", "--teams", "google=real", env={})
    assert code == 2
    assert "google team is set to real but GOOGLE_API_KEY or GEMINI_API_KEY is not set" in err
    code, _, err = await run_chimera("demo", "--teams", "google=maybe", env={})
    assert code == 2 and "unknown mode" in err
