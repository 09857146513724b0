"""A job and its opening events (``running``, then each team ``thinking``) are recorded in
one commit, so a job created alone, as CreateJob calls arrive, costs one commit and not
two or three: the promises hold as when the actors announced them."""

from __future__ import annotations

import json

from chimera.v1 import jobs_pb2 as pb
from tests.conftest import StartServer, ws_connect
from tests.metrics_scrape import delta, scrape
from tests.test_metrics import metrics_port

COMMITS = "chimera_store_commit_events_count"  # the broadcaster's commits of events


async def test_a_new_jobs_opening_events_are_recorded_with_it_in_one_commit(
    start_server: StartServer,
) -> None:
    # The simulated teams wait 60 s before their first thought: nothing else is written.
    server = await start_server(metrics_port=0, sim_delay=60.0)
    port = metrics_port(server)
    watcher = await ws_connect(server.ws_url("opened"))  # waits for a job not yet made
    assert json.loads(await watcher.recv())["type"] == "connected"
    before = await scrape(port)
    async with server.client() as client:
        created = await client.create("a counter", job_id="opened")
        seen = [json.loads(await watcher.recv()) for _ in range(3)]
        after = await scrape(port)
        job = await client.get("opened")

    # What the watcher saw, in order, gap-free: as the supervisor and teams announce it.
    assert [(e["seq"], e["type"], e.get("team"), e["data"]["status"]) for e in seen] == [
        (1, "status_change", None, "running"),
        (2, "status_change", "anthropic", "thinking"),
        (3, "status_change", "google", "thinking"),
    ]
    assert all(e["data"]["model"] == "simulated" for e in seen[1:])
    # Written by the job's own commit, not the broadcaster's: no commit of events.
    assert delta(after, before, COMMITS) == 0
    assert delta(after, before, "chimera_events_total", type="status_change") == 3
    # The record already holds what they did, in CreateJob's answer and in GetJob.
    for answer in (created, job):
        assert answer.last_sequence == 3 and answer.state == pb.JOB_STATE_RUNNING
        assert [(t.status, t.model) for t in answer.teams] == [
            (pb.TEAM_STATUS_THINKING, "simulated")
        ] * 2
    await watcher.close()
