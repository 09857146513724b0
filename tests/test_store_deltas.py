"""The store keeps a job as small parts plus its events: a long job, a restart in
the middle of it and a resume read back exactly as delivered; a database written
by the snapshot schema (schema 1) opens and serves its jobs."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sqlite3
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict
from websockets.asyncio.client import ClientConnection

from chimera.events import Event, TeamName, upgrade_frame
from chimera.gateways.convert import job_to_pb
from chimera.job import LATEST_THOUGHTS, Job, TeamRun
from chimera.providers.base import Provider
from chimera.v1 import jobs_pb2 as pb
from chimera.wire import TEAM_FROM_PB
from tests.conftest import StartServer, run_job, ws_connect
from tests.doubles import ScriptedProvider, factory

FIXTURES = Path(__file__).parent / "fixtures"
# Per team; with the statuses, the interruption and the job's own events the
# job has 2 + 2 x (THOUGHTS + 3) = 20,002 events.
THOUGHTS = 9_998


async def frames(ws: ClientConnection, until_seq: int | None = None) -> list[str]:
    """The job event frames (exact text) until ``until_seq``, or until the server closes."""
    out: list[str] = []
    async for raw in ws:
        assert isinstance(raw, str)
        if '"seq":' not in raw:
            continue  # "connected"
        out.append(raw)
        if until_seq is not None and json.loads(raw)["seq"] >= until_seq:
            break
    return out


def fetch(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: dict[str, Any] = json.loads(response.read())
        return body


def fold(job: Job, history: list[str]) -> Job:
    """The job as :meth:`Job.apply` folds the delivered events: the reference."""
    for frame in history:
        job.apply(Event.from_frame(frame.encode()))
    return job


def latest(job: Job, n: int) -> Job:
    trimmed = Job.from_json(job.to_json())
    for run in trimmed.teams.values():
        run.thoughts = run.thoughts[len(run.thoughts) - n :] if n else []
    return trimmed


async def test_a_20000_event_job_a_restart_and_a_resume_read_back_as_delivered(
    start_server: StartServer, tmp_path: Path
) -> None:
    db = str(tmp_path / "big.db")
    hold = asyncio.Event()  # never set: the restart interrupts the teams

    def long_team(team: TeamName) -> Callable[[], Provider]:
        return lambda: ScriptedProvider([f"{team} {i}" for i in range(THOUGHTS)], hold=hold)

    first = await start_server(factory({team: long_team(team) for team in TeamName}), db=db)
    async with first.client() as client:
        await client.create("a very long job", job_id="big")
    live_ws = await ws_connect(first.ws_url("big"), max_queue=None)
    partial_ws = await ws_connect(first.ws_url("big"))
    partial = await frames(partial_ws, until_seq=5_000)
    await partial_ws.close()
    # Every thought recorded (the teams now wait on `hold`); then the restart.
    live = await frames(live_ws, until_seq=1 + 2 * (THOUGHTS + 1))
    await first.stop()
    live += await frames(live_ws)  # the interruption, delivered before the close
    assert [json.loads(f)["seq"] for f in live] == list(range(1, len(live) + 1))
    assert len(live) >= 20_000 and json.loads(live[-1])["data"] == {"status": "failed"}

    second = await start_server(db=db)
    # The subscriber that left at seq 5,000 resumes on the new server.
    resumed = await frames(await ws_connect(second.ws_url("big", "since=5000")))
    assert partial + resumed == live
    # The whole history, over both planes, is what was delivered live.
    assert await frames(await ws_connect(second.ws_url("big"))) == live
    async with second.client() as client:
        streamed = [e async for e in client.events("big")]
        assert [e.sequence for e in streamed] == list(range(1, len(live) + 1))

        epoch = datetime(2000, 1, 1, tzinfo=UTC)
        expected = fold(
            Job("big", "a very long job", {t: TeamRun(t) for t in TeamName}, epoch, epoch),
            live,
        )
        assert all(run.thought_count == THOUGHTS for run in expected.teams.values())
        views = {
            pb.JOB_VIEW_FULL: expected,
            pb.JOB_VIEW_UNSPECIFIED: latest(expected, LATEST_THOUGHTS),
            pb.JOB_VIEW_BASIC: latest(expected, 0),
        }
        for view, job in views.items():
            got = await client.get("big", view)
            want = job_to_pb(job, got.epoch)
            want.create_time.CopyFrom(got.create_time)  # not derived from events
            assert got == want, view
        listed = (await client.list()).jobs
        assert len(listed) == 1 and listed[0] == await client.get("big")

    base = f"http://127.0.0.1:{second.server.ws_port}/api/jobs/big"
    for query, job in (("?view=full", expected), ("", latest(expected, LATEST_THOUGHTS)),
                       ("?view=basic", latest(expected, 0))):
        snapshot = await asyncio.to_thread(fetch, base + query)
        assert snapshot == {
            **job.to_dict(), "create_time": snapshot["create_time"], "epoch": listed[0].epoch
        }, query


async def test_a_schema_1_database_opens_and_serves_its_jobs(
    start_server: StartServer, tmp_path: Path
) -> None:
    """tests/fixtures/schema1.db was written by main at ebbdab2 (the whole job as
    JSON in jobs.snapshot): "old-done" finished, and the server was SIGKILLed
    while "old-killed" ran; old-done.json is what that server's GetJob returned."""
    db = tmp_path / "schema1.db"
    shutil.copy(FIXTURES / "schema1.db", db)
    with sqlite3.connect(db) as conn:
        stored = {
            job_id: [frame for job, frame in conn.execute(
                "SELECT job_id, frame FROM events ORDER BY job_id, seq") if job == job_id]
            for job_id in ("old-done", "old-killed")
        }
    conn.close()
    # Its events, as served since thoughts have ids: old thoughts get a derived one.
    upgraded = {job_id: [upgrade_frame(f) for f in history] for job_id, history in stored.items()}
    server = await start_server(db=str(db))
    async with server.client() as client:
        before = json.loads((FIXTURES / "old-done.json").read_text())
        thoughts: dict[str, list[dict[str, str]]] = {"anthropic": [], "google": []}
        for event in map(json.loads, upgraded["old-done"]):
            if event["type"] == "thought_added":
                data = event["data"]
                thoughts[data.pop("team")].append(data)
        for team in before["teams"]:
            ours = thoughts[team["team"].removeprefix("TEAM_").lower()]
            assert [t["text"] for t in ours] == team["thoughts"]  # the same texts as before
            team["thoughts"] = ours
            team["thoughtCount"] = str(len(ours))
            # Added since: the code so far, which is the code once it came.
            team["codeSoFar"] = team["code"]
        # The file gets its epoch when first opened (positions from before had none).
        before["epoch"] = (await client.get("old-done")).epoch
        assert re.fullmatch(r"[0-9a-f]{16}", before["epoch"])
        for view in (pb.JOB_VIEW_UNSPECIFIED, pb.JOB_VIEW_FULL):
            assert MessageToDict(await client.get("old-done", view)) == before
        # Its request_id still finds it.
        again = await client.create(before["brief"], request_id="req-1")
        assert again.job_id == "old-done"
        # The job the kill interrupted is closed as failed at start-up, after its history.
        [e.sequence async for e in client.events("old-killed")]
        killed = await client.get("old-killed", pb.JOB_VIEW_FULL)
        assert killed.state == pb.JOB_STATE_FAILED
        texts: dict[str, list[str]] = {"anthropic": [], "google": []}
        for event in map(json.loads, stored["old-killed"]):
            if event["type"] == "thought_added":
                texts[event["team"]].append(event["data"]["thought"])
        assert any(texts.values())
        assert {
            TEAM_FROM_PB[run.team].value: [t.text for t in run.thoughts] for run in killed.teams
        } == texts
    # Their histories are the stored events (thoughts given ids); old-killed's goes on.
    assert await frames(await ws_connect(server.ws_url("old-done"))) == upgraded["old-done"]
    delivered = await frames(await ws_connect(server.ws_url("old-killed")))
    assert delivered[: len(stored["old-killed"])] == upgraded["old-killed"]
    assert len(delivered) > len(stored["old-killed"])
    assert [json.loads(f)["seq"] for f in delivered] == list(range(1, len(delivered) + 1))
    # New jobs are written next to the old ones, and read back as their events fold.
    new = await run_job(server, "new-job")
    assert new.state == pb.JOB_STATE_SUCCEEDED and new.teams[0].code
    epoch = datetime(2000, 1, 1, tzinfo=UTC)
    folded = fold(
        Job("new-job", "a counter", {t: TeamRun(t) for t in TeamName}, epoch, epoch),
        await frames(await ws_connect(server.ws_url("new-job"))),
    )
    want = job_to_pb(folded, new.epoch)
    want.create_time.CopyFrom(new.create_time)
    assert new == want
    async with server.client() as client:
        assert [j.job_id for j in (await client.list()).jobs] == [
            "new-job", "old-killed", "old-done"
        ]
