"""``chimera_event_delivery_seconds``, a custom collector: the exposition prometheus-client's
own ``Histogram`` gives for the same observations, and one sum across processes."""

from __future__ import annotations

import asyncio
import os
from bisect import bisect_left
from pathlib import Path

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

from chimera.client import JobsClient
from chimera.observability.listener import worker_exited, worker_metrics
from chimera.observability.metrics import DELIVERY_BUCKETS, DeliveryHistogram
from tests.metrics_scrape import scrape, scrape_until, value
from tests.processes import free_port
from tests.test_metrics_multiprocess import serve

# Below, on and above bounds, the first and the last bucket, and +Inf.
VALUES = (0.00005, 0.0001, 0.0003, 0.0003, 0.003, 0.7, 1.0, 9.99, 12.0, 400.0)
COUNT = "chimera_event_delivery_seconds_count"


def batches(values: tuple[float, ...]) -> tuple[list[int], float]:
    """What :class:`Deliveries` hands a flush: counts per bucket, and their sum."""
    counts = [0] * len(DeliveryHistogram.bounds)
    total = 0.0
    for seconds in values:
        counts[bisect_left(DeliveryHistogram.bounds, seconds)] += 1
        total += seconds
    return counts, total


def without_sum(text: bytes) -> tuple[list[bytes], float]:
    """The exposition but its ``_sum`` line, and that sum (added in another order than
    one observation at a time, so equal only to the last bits)."""
    lines = text.splitlines()
    sums = [line for line in lines if line.startswith(b"chimera_event_delivery_seconds_sum")]
    return [line for line in lines if line not in sums], float(sums[0].split()[-1])


def same(ours: bytes, theirs: bytes) -> bool:
    (lines, total), (their_lines, their_total) = without_sum(ours), without_sum(theirs)
    return lines == their_lines and abs(total - their_total) <= 1e-9 * max(1.0, their_total)


def test_exposition_is_prometheus_clients_own() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    collector = DeliveryHistogram()
    ours.register(collector)
    reference = Histogram(
        DeliveryHistogram.name, DeliveryHistogram.documentation, buckets=DELIVERY_BUCKETS,
        registry=theirs,
    )
    assert generate_latest(ours) == generate_latest(theirs)  # empty: every bucket at 0
    for half in (VALUES[:4], VALUES[4:]):  # two flushes
        collector.add(*batches(half))
        for seconds in half:
            reference.observe(seconds)
        assert same(generate_latest(ours), generate_latest(theirs))
        assert same(
            openmetrics_latest(ours),  # type: ignore[no-untyped-call]
            openmetrics_latest(theirs),  # type: ignore[no-untyped-call]
        )
    assert b'chimera_event_delivery_seconds_bucket{le="0.0001"} 2.0' in generate_latest(ours)
    assert b"chimera_event_delivery_seconds_count 10.0" in generate_latest(ours)


def test_processes_add_up_in_their_directory(tmp_path: Path) -> None:
    """Each process's totals in a file of its own; any process reports the sum, and a
    process starting with the pid of one before carries on from its file."""
    shared = DeliveryHistogram(str(tmp_path))
    shared.add(*batches(VALUES))
    other = tmp_path / "chimera_delivery_seconds_1.json"  # another process's file
    other.write_text(
        (tmp_path / f"chimera_delivery_seconds_{os.getpid()}.json").read_text()
    )
    (tmp_path / "counter_1.db").write_bytes(b"prometheus-client's, not ours")
    registry = CollectorRegistry()
    registry.register(shared)
    text = generate_latest(registry).decode()
    assert f"{COUNT} {2.0 * len(VALUES)}" in text
    assert 'chimera_event_delivery_seconds_bucket{le="0.0001"} 4.0' in text
    again = DeliveryHistogram(str(tmp_path))  # this pid again, as a new process
    again.add(*batches(VALUES[:1]))
    registry = CollectorRegistry()
    registry.register(again)
    assert f"{COUNT} {2.0 * len(VALUES) + 1}" in generate_latest(registry).decode()


async def run_one_job(grpc_port: int) -> int:
    """Events the job's stream delivered."""
    async with JobsClient(f"127.0.0.1:{grpc_port}") as client:
        job = await client.create("a counter")
        return len([event async for event in client.events(job.job_id)])


async def test_one_scrape_counts_every_process_deliveries(tmp_path: Path) -> None:
    port = free_port()
    with worker_metrics():
        async with (
            serve(tmp_path, "first", port) as first,
            serve(tmp_path, "second", port) as second,
        ):
            delivered = sum(await asyncio.gather(
                run_one_job(first.grpc_port), run_one_job(second.grpc_port)
            ))
            assert delivered > 2
            # Either process answers; the other's flush is at most a second away.
            await scrape_until(port, lambda s: value(s, COUNT) == delivered)
            first.process.kill()  # what a crashed worker counted stays
            await first.process.wait()
            worker_exited(first.process.pid)
            samples = await scrape(port)
            assert value(samples, COUNT) == delivered
            assert value(samples, "chimera_event_delivery_seconds_sum") > 0
