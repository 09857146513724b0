"""Shedding with 4008 on the serving loop (uvloop; and asyncio's): several flooding jobs at once
(commits carry many jobs' events); a subscriber of one that stops reading is
closed 4008 naming the last seq it received, while the other subscriber of the
same job and those of the other jobs get everything; it resumes with no gap."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from chimera.v1 import jobs_pb2 as pb
from tests.conftest import job_events, read_until_closed, ws_connect
from tests.processes import Node, spawn
from tests.test_shedding_retention import open_stuck_subscriber, read_frames


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
async def test_a_stuck_reader_is_shed_4008_and_resumes_others_unaffected(
    tmp_path: Path, loop: str
) -> None:
    log = tmp_path / "serve.log"
    process, grpc_port, ws_port = await spawn(
        "flood server", log, [str(tmp_path / "c.db"), loop], module="tests.flood_serve"
    )
    node = Node("flood", process, log, grpc_port, ws_port)
    try:
        assert f"(event loop: {loop}" in node.read_log()
        ids = [f"flood-{i}" for i in range(4)]
        # A small receive buffer and Ethernet's MSS: the kernels hold ~150 KB of the
        # megabytes the server writes to it.
        stuck_reader, stuck_writer = await open_stuck_subscriber(
            ws_port, ids[0], receive_buffer=4096, segment=1460
        )
        readers = [await ws_connect(node.ws_url(j), max_queue=None) for j in ids]
        reading = [asyncio.create_task(read_until_closed(ws)) for ws in readers]
        async with node.client() as client:
            await asyncio.gather(*(client.create("a flood", job_id=j) for j in ids))
            # The readers get every event to the end while the stuck one reads nothing.
            got = await asyncio.wait_for(asyncio.gather(*reading), 60)
            jobs = [await client.get(j) for j in ids]
        for ws, messages, job in zip(readers, got, jobs, strict=True):
            events = job_events(messages)
            assert job.state == pb.JOB_STATE_SUCCEEDED
            assert [m["seq"] for m in events] == list(range(1, job.last_sequence + 1))
            assert ws.close_code == 1000 and events[-1]["data"] == {"status": "succeeded"}
        # Reading now: what was on the wire, then 4008 naming the last seq received.
        messages, code, reason = await asyncio.wait_for(read_frames(stuck_reader), 30)
        stuck_writer.close()
        seen = [m["seq"] for m in job_events(messages)]
        last = jobs[0].last_sequence
        assert code == 4008, (code, reason)
        assert seen == list(range(1, len(seen) + 1)) and len(seen) < last
        assert f"since={len(seen)}" in reason, reason
        resumed = await ws_connect(node.ws_url(ids[0], len(seen)), max_queue=None)
        rest = [m["seq"] for m in job_events(await read_until_closed(resumed))]
        assert seen + rest == list(range(1, last + 1))
        assert resumed.close_code == 1000
    finally:
        node.kill()
        await process.wait()
