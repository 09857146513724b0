"""Durability: a real ``chimera serve`` killed with SIGKILL mid-job, then started again."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
from pathlib import Path
from typing import Any

from websockets.exceptions import ConnectionClosed

from chimera.v1 import jobs_pb2 as pb
from tests.conftest import first_events, job_events, read_until_closed, ws_connect
from tests.metrics_scrape import scrape, value
from tests.processes import chimera_serve, free_port


async def test_sigkill_mid_job_then_restart_loses_nothing(tmp_path: Path) -> None:
    db = tmp_path / "chimera.db"
    seen: list[dict[str, Any]] = []
    async with chimera_serve(db, tmp_path / "first.log", "--sim-delay", "0.1") as first:
        async with first.client() as client:
            await client.create("Create a login form", job_id="killed")
        ws = await ws_connect(first.ws_url("killed"))
        assert json.loads(await ws.recv())["type"] == "connected"
        seen += await first_events(ws, 6)
        first.process.send_signal(signal.SIGKILL)
        await first.process.wait()
        # Whatever was already on its way is still delivered; then the connection drops.
        try:
            async for raw in ws:
                seen.append(json.loads(raw))
        except ConnectionClosed:
            pass
        assert ws.close_code != 1000
    assert seen[-1]["data"].get("status") not in ("succeeded", "failed")  # killed mid-job
    # The file is intact after the kill.
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)

    metrics = free_port()
    async with chimera_serve(
        db, tmp_path / "second.log", "--metrics-port", str(metrics)
    ) as second:
        # The job closed at start-up counts as a failed job; none is running.
        samples = await scrape(metrics)
        assert value(samples, "chimera_jobs_finished_total", state="failed") == 1
        assert value(samples, "chimera_jobs_running") == 0
        # The subscriber resumes after the last seq it saw, on the new server.
        last_seen = seen[-1]["seq"]
        resumed = await ws_connect(second.ws_url("killed", last_seen))
        rest = job_events(await read_until_closed(resumed))
        assert resumed.close_code == 1000
        assert [m["seq"] for m in seen + rest] == list(range(1, len(seen) + len(rest) + 1))
        assert rest[-1]["data"] == {"status": "failed"} and "team" not in rest[-1]
        interrupted = [m for m in rest if m["type"] == "error"]
        assert interrupted and all(
            m["data"]["error"] == "interrupted: server stopped" for m in interrupted
        )
        # Every event a subscriber saw is still there, the same, with its whole history.
        everything = job_events(await read_until_closed(await ws_connect(second.ws_url("killed"))))
        assert everything == seen + rest
        async with second.client() as client:
            job = await client.get("killed")
            assert job.state == pb.JOB_STATE_FAILED
            assert job.last_sequence == everything[-1]["seq"]
            for run in job.teams:
                assert run.status in (pb.TEAM_STATUS_ERROR, pb.TEAM_STATUS_COMPLETE)
                if run.status == pb.TEAM_STATUS_ERROR:
                    assert run.error == "interrupted: server stopped"
            # gRPC resumes across the restart too: exactly the events after N.
            grpc_rest = [e.sequence async for e in client.events("killed", last_seen)]
            assert grpc_rest == [m["seq"] for m in rest]
        second.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(second.process.wait(), 30) == 0
