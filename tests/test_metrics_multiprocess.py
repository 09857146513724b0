"""Several server processes on one host, one scrape: ``PROMETHEUS_MULTIPROC_DIR``, set
for them by :func:`worker_metrics` as a parent starting workers does."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

from chimera.client import JobsClient
from chimera.observability.listener import MULTIPROC_ENV, worker_exited, worker_metrics
from tests.conftest import ws_connect
from tests.metrics_scrape import scrape, scrape_until, value
from tests.processes import Node, free_port, spawn


def files(directory: str) -> list[str]:
    """The files in ``directory`` (none if it does not exist)."""
    return os.listdir(directory) if os.path.isdir(directory) else []


@contextlib.asynccontextmanager
async def serve(tmp: Path, name: str, metrics_port: int) -> AsyncIterator[Node]:
    """A real ``chimera serve``, started as a worker (environment inherited)."""
    log = tmp / f"{name}.log"
    process, grpc_port, ws_port = await spawn(name, log, [
        "serve", "--grpc-port", "0", "--ws-port", "0", "--db", str(tmp / f"{name}.db"),
        "--sim-delay", "0.01", "--metrics-port", str(metrics_port),
    ])
    worker = Node(name, process, log, grpc_port, ws_port)
    try:
        yield worker
    finally:
        await worker.stop()


async def run_one_job(grpc_port: int) -> None:
    async with JobsClient(f"127.0.0.1:{grpc_port}") as client:
        job = await client.create("a counter")
        async for _ in client.events(job.job_id):
            pass


async def test_one_scrape_shows_every_process(tmp_path: Path) -> None:
    port = free_port()
    with worker_metrics():
        shared = os.environ[MULTIPROC_ENV]
        async with (
            serve(tmp_path, "first", port) as first,
            serve(tmp_path, "second", port) as second,
        ):
            await asyncio.gather(run_one_job(first.grpc_port), run_one_job(second.grpc_port))
            # Both processes listen on the port; whichever answers reports both.
            for _ in range(6):
                samples = await scrape(port)
                assert value(samples, "chimera_jobs_created_total") == 2
                assert value(samples, "chimera_jobs_finished_total", state="succeeded") == 2
                assert value(samples, "chimera_jobs_running") == 0
                assert value(samples, "grpc_server_handled_total", grpc_type="unary",
                             grpc_service="chimera.v1.JobService", grpc_method="CreateJob",
                             grpc_code="OK") == 2
            # A worker that dies holding a connection: once reported, its live
            # gauges stop counting; what it counted stays.
            watcher = await ws_connect(f"ws://127.0.0.1:{first.ws_port}/ws/orchestrate/idle")
            await watcher.recv()
            await scrape_until(port, lambda s: value(s, "chimera_ws_connections") == 1)
            first.process.kill()
            await first.process.wait()
            worker_exited(first.process.pid)
            samples = await scrape(port)  # only the second can answer now
            assert value(samples, "chimera_ws_connections") == 0
            assert value(samples, "chimera_jobs_created_total") == 2
        assert len(files(shared)) >= 2  # every process wrote its own files
    assert MULTIPROC_ENV not in os.environ and files(shared) == []
