"""A subscriber that falls behind (within its bound) catches up through its queue:
every event once and in order, then the live ones, each counted once."""

from __future__ import annotations

import asyncio
import json

from chimera.events import TeamName
from tests.conftest import StartServer, until
from tests.doubles import ScriptedProvider, factory
from tests.metrics_scrape import delta, scrape, scrape_until, value
from tests.test_metrics import CONNECTIONS, DELIVERY_COUNT, metrics_port
from tests.test_shedding_retention import open_stuck_subscriber, read_frame

THOUGHTS = 500  # per team, ~2 KB each: ~2 MB, far more than the kernel holds


async def read_seqs(reader: asyncio.StreamReader, up_to: int | None) -> tuple[list[int], int]:
    """The events' seqs until ``up_to`` (then close code 0), or until the close frame."""
    seqs: list[int] = []
    while True:
        opcode, payload = await read_frame(reader)
        if opcode == 8:
            return seqs, int.from_bytes(payload[:2], "big")
        if opcode != 1:
            continue  # a ping
        message = json.loads(payload)
        if "seq" in message:
            seqs.append(message["seq"])
            if message["seq"] == up_to:
                return seqs, 0


async def test_a_slow_subscriber_catches_up_in_order_then_gets_live_events(
    start_server: StartServer,
) -> None:
    hold = asyncio.Event()
    text = "x" * 2000
    teams = {team: (lambda: ScriptedProvider([text] * THOUGHTS, hold=hold)) for team in TeamName}
    # A bound well above the backlog: this subscriber is behind, never shed.
    server = await start_server(factory(teams), subscriber_max_bytes=16 * 2**20, metrics_port=0)
    port = metrics_port(server)
    before = await scrape(port)
    # Its server-side kernel holds ~150 KB; the rest of the backlog waits in the queue.
    slow, slow_writer = await open_stuck_subscriber(
        server.server.ws_port, "behind", receive_buffer=4096, segment=1460
    )
    async with server.client() as client:
        await client.create("a counter", job_id="behind")

        async def thought_all() -> bool:
            job = await client.get("behind")
            return all(team.thought_count == THOUGHTS for team in job.teams)

        # Every thought recorded, the teams held before their answers: nothing more
        # comes until the test lets them go.
        await until(thought_all, 60, every=0.05)
        backlog = (await client.get("behind")).last_sequence
        caught_up, _ = await asyncio.wait_for(read_seqs(slow, backlog), 60)
        # Caught up: the answers and the final event come live.
        hold.set()
        live, code = await asyncio.wait_for(read_seqs(slow, None), 60)
        slow_writer.close()
        last = (await client.get("behind")).last_sequence
    assert caught_up == list(range(1, backlog + 1))
    assert live == list(range(backlog + 1, last + 1)) and live
    assert code == 1000
    # Counted once each: the greeting and every event, delivered as many times.
    after = await scrape_until(port, lambda s: value(s, CONNECTIONS) == 0)
    assert delta(after, before, "chimera_ws_messages_sent_total") == last + 1
    assert delta(after, before, DELIVERY_COUNT) == last
    await until(lambda: server.server.broadcaster.subscriber_count("behind") == 0)
