"""Several server processes on one host, one scrape: ``PROMETHEUS_MULTIPROC_DIR``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from chimera.client import JobsClient
from tests.metrics_scrape import scrape, value
from tests.test_durability import SERVING, read_log


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def serve(tmp: Path, name: str, metrics_port: int, multiproc: Path) -> AsyncIterator[int]:
    """A real ``chimera serve`` in multiprocess mode; yields its gRPC port."""
    log = tmp / f"{name}.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "chimera", "serve", "--grpc-port", "0", "--ws-port", "0",
            "--db", str(tmp / f"{name}.db"), "--sim-delay", "0.01",
            "--metrics-port", str(metrics_port), stdout=out, stderr=out,
            env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(multiproc)},
        )
    try:
        async with asyncio.timeout(30):
            while not (found := SERVING.search(read_log(log))):
                assert process.returncode is None, read_log(log)
                await asyncio.sleep(0.05)
        yield int(found[1])
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 30)


async def run_one_job(grpc_port: int) -> None:
    async with JobsClient(f"127.0.0.1:{grpc_port}") as client:
        job = await client.create("a counter")
        async for _ in client.events(job.job_id):
            pass


async def test_one_scrape_shows_every_process(tmp_path: Path) -> None:
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    port = free_port()
    async with (
        serve(tmp_path, "first", port, multiproc) as first,
        serve(tmp_path, "second", port, multiproc) as second,
    ):
        await asyncio.gather(run_one_job(first), run_one_job(second))
        # Both processes listen on the port; whichever answers reports both.
        for _ in range(6):
            samples = await scrape(port)
            assert value(samples, "chimera_jobs_created_total") == 2
            assert value(samples, "chimera_jobs_finished_total", state="succeeded") == 2
            assert value(samples, "chimera_jobs_running") == 0
            assert value(samples, "grpc_server_handled_total", grpc_type="unary",
                         grpc_service="chimera.v1.JobService", grpc_method="CreateJob",
                         grpc_code="OK") == 2
    assert len(list(multiproc.iterdir())) >= 2  # every process wrote its own files
