"""Metrics: a real server's ``/metrics``, scraped and parsed with prometheus-client's parser,
checked against what real clients saw."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import urllib.error
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from websockets.exceptions import ConnectionClosed

from chimera.defaults import DEFAULT_METRICS_PORT
from chimera.errors import ConfigError
from chimera.events import Draft, Event, TeamName
from chimera.observability.metrics import Deliveries
from chimera.providers.base import AnswerStarted, CodeResult, ProviderEvent, Thought
from chimera.providers.faults import RetryableError
from chimera.providers.retry import RetryPolicy, with_retries
from chimera.v1 import jobs_pb2 as pb
from tests.conftest import Running, StartServer, run_job, until, ws_connect
from tests.doubles import factory
from tests.http_raw import http_request
from tests.metrics_scrape import delta, fetch, scrape, scrape_until, value
from tests.security import SECRET
from tests.test_shedding_retention import flooded, read_frames

CONNECTIONS = "chimera_ws_connections"
DELIVERY_COUNT = "chimera_event_delivery_seconds_count"


def metrics_port(server: Running) -> int:
    assert server.server.metrics is not None
    return server.server.metrics.port


async def read_raw(ws: Any) -> list[str]:
    """Every message, as sent, until the server closes."""
    return [raw async for raw in ws]


async def test_a_job_watched_by_two_websockets_and_a_grpc_stream(
    start_server: StartServer,
) -> None:
    server = await start_server(metrics_port=0)
    port = metrics_port(server)
    before = await scrape(port)
    assert value(before, CONNECTIONS) == 0
    subscribers = [await ws_connect(server.ws_url("watched")) for _ in range(2)]
    greetings = [await ws.recv() for ws in subscribers]
    assert all(json.loads(g)["type"] == "connected" for g in greetings)
    assert value(await scrape(port), CONNECTIONS) == 2
    async with server.client() as client:
        await client.create("a counter", job_id="watched")
        streamed = [e async for e in client.events("watched")]
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.create("   ", job_id="empty")
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        frames = [await asyncio.wait_for(read_raw(ws), 30) for ws in subscribers]
    # Once both have left, the server lets go of them: no connection is left counted.
    after = await scrape_until(port, lambda s: value(s, CONNECTIONS) == 0)

    seen = [[json.loads(f) for f in got] for got in frames]
    events = seen[0]
    assert seen[1] == events and all(ws.close_code == 1000 for ws in subscribers)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert len(streamed) == len(events)
    n = len(events)

    # Every frame the clients got was counted (events, plus each one's "connected").
    sent = delta(after, before, "chimera_ws_messages_sent_total")
    assert sent >= n * 2 and sent == n * 2 + 2
    payloads = sum(len(str(m).encode()) for m in greetings + frames[0] + frames[1])
    assert delta(after, before, "chimera_ws_bytes_sent_total") == payloads
    # One delivery observation per event per subscriber, on both planes.
    assert delta(after, before, DELIVERY_COUNT) == n * 2 + len(streamed)
    assert delta(after, before, "chimera_event_delivery_seconds_sum") > 0
    assert delta(after, before, "chimera_ws_disconnects_total", reason="finished") == 2

    # gRPC, with the go-grpc-prometheus names.
    create = {"grpc_type": "unary", "grpc_service": "chimera.v1.JobService",
              "grpc_method": "CreateJob"}
    assert delta(after, before, "grpc_server_started_total", **create) == 2
    assert delta(after, before, "grpc_server_handled_total", **create, grpc_code="OK") == 1
    assert delta(
        after, before, "grpc_server_handled_total", **create, grpc_code="INVALID_ARGUMENT"
    ) == 1
    assert delta(after, before, "grpc_server_handling_seconds_count", **create) == 2
    stream = {"grpc_type": "server_stream", "grpc_service": "chimera.v1.JobService",
              "grpc_method": "StreamJobEvents"}
    assert delta(after, before, "grpc_server_handled_total", **stream, grpc_code="OK") == 1

    # Jobs, events, teams, providers, store.
    assert delta(after, before, "chimera_jobs_created_total") == 1
    assert delta(after, before, "chimera_jobs_finished_total", state="succeeded") == 1
    assert value(after, "chimera_jobs_running") == 0
    for kind, count in Counter(e["type"] for e in events).items():
        assert delta(after, before, "chimera_events_total", type=kind) == count
    for e in events:
        if e["type"] == "code_generated":
            tokens = e["data"]["token_count"]
            assert tokens > 0
            assert delta(after, before, "chimera_provider_tokens_total", team=e["team"]) == tokens
    for team in TeamName:
        run = {"team": team.value, "provider": "simulated", "status": "complete"}
        assert delta(after, before, "chimera_team_runs_total", **run) == 1
        for hist in ("request", "first_token"):
            name = f"chimera_provider_{hist}_seconds_count"
            assert delta(after, before, name, team=team.value) == 1
    # All but the job's opening events (running, two teams thinking): its creation
    # recorded those with the job (tests/test_opening_commit.py).
    assert delta(after, before, "chimera_store_commit_events_sum") == n - 3
    assert delta(after, before, "chimera_store_commit_seconds_count") >= 1


async def test_a_shed_subscriber_is_counted_as_too_slow(start_server: StartServer) -> None:
    server, stuck_reader, stuck_writer, fast = await flooded(start_server, metrics_port=0)
    port = metrics_port(server)
    before = await scrape(port)
    async with server.client() as client:
        reading = asyncio.create_task(read_raw(fast))
        await client.create("a counter", job_id="flood")
        # Shed: the stuck one leaves the job's subscribers (read it now: the
        # server gives up on the close handshake after 5 s).
        await until(lambda: server.server.broadcaster.subscriber_count("flood") == 1, 60)
        _, code, _ = await asyncio.wait_for(read_frames(stuck_reader), 30)
        assert code == 4008
        stuck_writer.close()
        await asyncio.wait_for(reading, 60)
    after = await scrape_until(port, lambda s: value(s, CONNECTIONS) == 0)
    assert delta(after, before, "chimera_ws_disconnects_total", reason="too_slow") == 1
    assert delta(after, before, "chimera_ws_disconnects_total", reason="finished") == 1


async def test_a_close_websockets_makes_itself_is_counted_by_its_code(
    start_server: StartServer,
) -> None:
    """A client frame over the limit is closed 1009 by websockets, not by Chimera's
    session: the metric still names the close code the server sent."""
    server = await start_server(max_frame_bytes=1024, metrics_port=0)
    port = metrics_port(server)
    before = await scrape(port)
    async with await ws_connect(server.ws_url("big"), max_size=None) as ws:
        await ws.recv()  # connected
        await ws.send("x" * 2048)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 30)
        assert ws.close_code == 1009
    after = await scrape_until(port, lambda s: value(s, CONNECTIONS) == 0)
    assert delta(after, before, "chimera_ws_disconnects_total", reason="frame_too_large") == 1
    assert delta(after, before, "chimera_ws_disconnects_total", reason="client") == 0


async def test_calls_refused_by_auth_are_counted(start_server: StartServer) -> None:
    server = await start_server(jwt_secret=SECRET, metrics_port=0)
    port = metrics_port(server)
    before = await scrape(port)
    async with server.client() as client:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.create("a counter")
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    after = await scrape(port)
    create = {"grpc_type": "unary", "grpc_service": "chimera.v1.JobService",
              "grpc_method": "CreateJob"}
    assert delta(
        after, before, "grpc_server_handled_total", **create, grpc_code="UNAUTHENTICATED"
    ) == 1
    assert delta(after, before, "chimera_jobs_created_total") == 0


async def test_the_listener_serves_only_metrics(start_server: StartServer) -> None:
    server = await start_server(metrics_port=0)
    text = await asyncio.to_thread(fetch, metrics_port(server))
    assert "# TYPE chimera_ws_connections gauge" in text
    assert "process_cpu_seconds_total" in text  # the client's default collectors
    with pytest.raises(urllib.error.HTTPError) as missing:
        await asyncio.to_thread(fetch, metrics_port(server), "/")
    assert missing.value.code == 404
    missing.value.close()


async def test_the_listener_refuses_a_foreign_host_name(start_server: StartServer) -> None:
    # DNS rebinding: a page whose name now points at 127.0.0.1 must not read the figures.
    server = await start_server(metrics_port=0, allowed_hosts=("chimera.example",))
    port = metrics_port(server)
    rebound = await http_request(port, "GET", "/metrics", {"Host": f"evil.example:{port}"})
    assert rebound.status == 421
    assert b"--allowed-host" in rebound.body and b"chimera_" not in rebound.body
    for name in ("127.0.0.1", "localhost", "chimera.example"):
        ok = await http_request(port, "GET", "/metrics", host=name)
        assert ok.status == 200, name
        assert b"# TYPE chimera_ws_connections gauge" in ok.body


async def test_a_taken_metrics_port(start_server: StartServer) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # Asked for: refuses to start, saying why.
        with pytest.raises(ConfigError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            await start_server(metrics_port=port)
        # Only the default: serves without metrics.
        server = await start_server(metrics_port=port, metrics_port_default=True)
        assert server.server.metrics is None
        async with server.client() as client:
            job = await client.create("a counter")
            assert job.state == pb.JOB_STATE_RUNNING


DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
METRIC_NAME = re.compile(r"\b(?:chimera|grpc|process|python)_[a-zA-Z0-9_]+")
LABEL_LISTS = re.compile(r"\b(?:by|without)\s*\([^)]*\)|\{[^}]*\}")


def dashboard_queries(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        return found + [q for child in node.values() for q in dashboard_queries(child)]
    if isinstance(node, list):
        return [q for child in node for q in dashboard_queries(child)]
    return []


async def test_every_metric_the_dashboard_queries_is_in_a_real_scrape(
    start_server: StartServer,
) -> None:
    queries = dashboard_queries(json.loads((DEPLOY / "grafana" / "chimera.json").read_text()))
    wanted = {
        name for query in queries for name in METRIC_NAME.findall(LABEL_LISTS.sub("", query))
    }
    assert len(queries) >= 20 and len(wanted) >= 20
    server = await start_server(metrics_port=0)
    async with server.client() as client:
        await client.create("a counter")  # so the gRPC series exist
    scraped = {name for name, _ in await scrape(metrics_port(server))}
    assert wanted - scraped == set()
    # The scrape config points at the default listener.
    config = (DEPLOY / "prometheus.yml").read_text()
    assert f'targets: ["127.0.0.1:{DEFAULT_METRICS_PORT}"]' in config
    assert "metrics_path: /metrics" in config


class FlakyProvider:
    """Fails its first attempt with ``status`` (retryable), then answers; through the
    real retry loop of the providers."""

    model = "flaky"

    def __init__(self, status: int | None) -> None:
        self.status = status
        self.attempts = 0

    async def attempt(self) -> AsyncGenerator[ProviderEvent, None]:
        self.attempts += 1
        yield Thought("thinking")
        if self.attempts == 1:
            raise RetryableError("try again", status=self.status)
        yield AnswerStarted()
        yield CodeResult("export const x = 1;", "tsx", 7)

    def stream(self, brief: str) -> AsyncIterator[ProviderEvent]:
        return with_retries(self.attempt, RetryPolicy(backoff_base=0.001), provider="anthropic")


async def test_provider_retries_are_counted_by_reason(start_server: StartServer) -> None:
    server = await start_server(
        factory({TeamName.ANTHROPIC: lambda: FlakyProvider(429)}), metrics_port=0
    )
    port = metrics_port(server)
    before = await scrape(port)
    job = await run_job(server, "flaky")
    assert job.state == pb.JOB_STATE_SUCCEEDED
    after = await scrape(port)
    retries = "chimera_provider_retries_total"
    assert delta(after, before, retries, team="anthropic", reason="rate_limited") == 1
    assert delta(after, before, retries, team="google", reason="rate_limited") == 0
    assert delta(after, before, "chimera_provider_tokens_total", team="anthropic") == 7
    real = {"team": "anthropic", "provider": "real", "status": "complete"}
    assert delta(after, before, "chimera_team_runs_total", **real) == 1


async def test_fast_path_deliveries_are_timed_when_written_not_when_flushed() -> None:
    """The fast path counts runs of one event; the last run is closed at the end of
    the loop step that wrote it, so its latency is not stretched to the next flush."""
    deliveries = Deliveries()
    event = Event.from_draft(Draft.thought("timed", TeamName.ANTHROPIC, "x"), 1)
    for _ in range(Deliveries.RUN + 5):  # one full run and a partial one
        deliveries.live(event, 100)
    assert sum(deliveries.buckets) == Deliveries.RUN
    await asyncio.sleep(0)  # the end of the step that wrote them
    assert sum(deliveries.buckets) == Deliveries.RUN + 5
    assert deliveries.messages == Deliveries.RUN + 5
    assert deliveries.bytes == 100 * (Deliveries.RUN + 5)
    assert deliveries.seconds < 1.0
