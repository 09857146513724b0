#!/usr/bin/env python
"""Every Chimera benchmark in one table, each figure beside its anchor from the same run.

    .venv/bin/python scripts/bench.py            # the whole table, median of 3 (~15 min)
    .venv/bin/python scripts/bench.py --quick    # smaller sizes, 1 run each (~2 min)
    .venv/bin/python scripts/bench.py --only one-job,create

Sections (each server runs in a process of its own, its clients in another):

- ``one-job``: one job of M thought events (M = 1k / 5k / 20k / 50k), one
  WebSocket subscriber: delivered events/s and the server process's CPU time
  (user + system, all threads) per 1,000 events, against a bare
  ``websockets.broadcast()`` server sending the same frames.
- ``many-jobs``: J jobs at once (J = 50 / 200) x 200 events x 2 subscribers each:
  delivered events/s and publish-to-receive p50/p99, against the bare server
  with one channel (connection set) per job.
- ``create``: CreateJob over gRPC at concurrency 1 / 16 / 64 (each job then runs:
  5 thoughts and its code): calls/s and p50/p99, against a bare ``grpc.aio``
  server whose CreateJob returns a fixed reply.
- ``fanout``: ``scripts/bench_fanout.py``'s table (one job, N = 1 / 100 / 1000
  subscribers) and ``memory``: RSS per idle subscriber at 10,000.

The ratio column is Chimera / anchor (for CPU, anchor / Chimera: above 100% means
Chimera is cheaper). The machine's cores are shared, so absolute figures move
from run to run; the ratios against the same run's anchor are what to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
import uuid
from array import array
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench_fanout as fan  # scripts/, this file's directory, is on sys.path

SUBSCRIBER_BYTES = 256 << 20  # a 50k-event job must not shed its one reader
CREATE_THOUGHTS = 5


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


# -- servers ----------------------------------------------------------------------------


async def _chimera_server(conn: Connection, db: str) -> None:
    from chimera.actors.jobs import JobRequest
    from chimera.auth.principal import ANONYMOUS
    from chimera.config import ServerConfig
    from chimera.events import TeamName
    from chimera.providers.base import AnswerStarted, CodeResult, Provider, ProviderEvent
    from chimera.providers.base import Thought as ThoughtEvent
    from chimera.server import ChimeraServer

    count = {"m": CREATE_THOUGHTS}

    class BenchProvider:
        model = "bench"

        def __init__(self, m: int) -> None:
            self.m = m

        async def stream(self, brief: str) -> AsyncIterator[ProviderEvent]:
            for i in range(self.m):
                yield ThoughtEvent(fan.thought(i))
                await asyncio.sleep(0)  # as the bare publisher does
            yield AnswerStarted()
            yield CodeResult("export const x = 1;", "tsx", 1)

    def providers(team: TeamName) -> Provider:
        provider: Provider = BenchProvider(count["m"])
        return provider

    config = ServerConfig(
        grpc_port=0, ws_port=0, db=db, sim_delay=0, shutdown_grace=1.0,
        max_subscribers_per_address=1_000_000, max_subscribers_per_job=1_000_000,
        max_jobs_per_caller=1_000_000, subscriber_max_bytes=SUBSCRIBER_BYTES,
    )
    server = ChimeraServer(config, providers=providers)
    async with asyncio.TaskGroup() as tg:
        serving = tg.create_task(server.serve())
        await server.ready.wait()
        gc.collect()
        conn.send(("port", server.ws_port, server.grpc_port))
        async for command in fan._commands(conn):
            if command[0] == "jobs":
                _, jobs, m = command
                count["m"] = m
                started, cpu = time.time(), cpu_seconds()
                async with asyncio.TaskGroup() as creating:
                    for j in range(jobs):
                        creating.create_task(server.jobs.create(
                            JobRequest(brief="bench", teams=[TeamName.ANTHROPIC],
                                       job_id=f"bench-{j}"),
                            principal=ANONYMOUS,
                        ))
                count["m"] = CREATE_THOUGHTS
                conn.send(("started", started, cpu))
            elif command[0] == "cpu":
                conn.send(("cpu", cpu_seconds()))
        server.stop()
        await serving


async def _bare_ws_server(conn: Connection) -> None:
    from websockets.asyncio.server import ServerConnection, broadcast, serve

    from chimera.events import iso_timestamp, utc_now

    channels: dict[str, set[ServerConnection]] = {}

    async def handler(ws: ServerConnection) -> None:
        channel = channels.setdefault(ws.request.path if ws.request else "/", set())
        channel.add(ws)
        try:
            await ws.send('{"type":"connected"}')
            await ws.wait_closed()
        finally:
            channel.discard(ws)

    async def publish(job_id: str, m: int) -> None:
        clients = channels.setdefault(f"/ws/orchestrate/{job_id}", set())
        for i in range(m):
            now = iso_timestamp(utc_now())
            data = {"id": str(uuid.uuid4()), "text": fan.thought(i), "timestamp": now,
                    "team": "anthropic"}  # the shape Chimera's thought_added has
            frame = json.dumps(
                {"type": "thought_added", "team": "anthropic", "data": data,
                 "timestamp": now, "job_id": job_id, "seq": i + 3},
                ensure_ascii=False, separators=(",", ":"),
            )
            broadcast(clients, frame)
            await asyncio.sleep(0)

    async with (
        serve(handler, "127.0.0.1", 0, compression=None, max_size=16 * 1024) as server,
        asyncio.TaskGroup() as tg,
    ):
        gc.collect()
        conn.send(("port", server.sockets[0].getsockname()[1], 0))
        async for command in fan._commands(conn):
            if command[0] == "jobs":
                _, jobs, m = command
                started, cpu = time.time(), cpu_seconds()
                for j in range(jobs):
                    tg.create_task(publish(f"bench-{j}", m))
                conn.send(("started", started, cpu))
            elif command[0] == "cpu":
                conn.send(("cpu", cpu_seconds()))


async def _bare_grpc_server(conn: Connection) -> None:
    import grpc

    from chimera.v1 import jobs_pb2 as pb
    from chimera.v1 import jobs_pb2_grpc

    class Bare(jobs_pb2_grpc.JobServiceServicer):
        async def CreateJob(
            self, request: pb.CreateJobRequest, context: Any
        ) -> pb.CreateJobResponse:
            return pb.CreateJobResponse(job=pb.Job(
                job_id="bench", brief=request.brief, state=pb.JOB_STATE_RUNNING,
                teams=[pb.TeamRun(team=pb.TEAM_ANTHROPIC, status=pb.TEAM_STATUS_IDLE)],
            ))

    server = grpc.aio.server()
    jobs_pb2_grpc.add_JobServiceServicer_to_server(Bare(), server)  # type: ignore[abstract]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    conn.send(("port", 0, port))
    async for _ in fan._commands(conn):
        pass
    await server.stop(1)


def server_main(kind: str, conn: Connection, db: str) -> None:
    fan.run_profiled(server_main_unprofiled, kind, conn, db)


def server_main_unprofiled(kind: str, conn: Connection, db: str) -> None:
    if kind == "chimera":
        asyncio.run(_chimera_server(conn, db))
    elif kind == "bare":
        asyncio.run(_bare_ws_server(conn))
    else:
        asyncio.run(_bare_grpc_server(conn))


def start_server(ctx: Any, kind: str, db: str) -> tuple[Any, Connection, int, int]:
    ours, theirs = ctx.Pipe()
    process = ctx.Process(target=server_main, args=(kind, theirs, db))
    process.start()
    _, ws_port, grpc_port = fan._expect(ours, "port")
    return process, ours, ws_port, grpc_port


# -- clients ----------------------------------------------------------------------------


async def _ws_clients(port: int, jobs: int, per_job: int, m: int, conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    latencies: array[float] = array("d")
    clients: list[fan.Client] = []
    gate = asyncio.Semaphore(200)

    async def open_one(path: str) -> None:
        async with gate:
            client = fan.Client(path, port, m, latencies)
            await loop.create_connection(lambda: client, "127.0.0.1", port)
            await asyncio.wait_for(client.greeted, 60)
            clients.append(client)

    async with asyncio.TaskGroup() as tg:
        for j in range(jobs):
            for _ in range(per_job):
                tg.create_task(open_one(f"/ws/orchestrate/bench-{j}"))
    conn.send(("ready", len(clients)))
    await asyncio.wait([asyncio.ensure_future(c.done) for c in clients], timeout=600)
    conn.send((
        "result", sum(c.count for c in clients), max(c.last_receive for c in clients),
        sum(c.order_errors for c in clients), latencies.tobytes(),
    ))


def ws_clients_main(port: int, jobs: int, per_job: int, m: int, conn: Connection) -> None:
    fan.raise_fd_limit()
    asyncio.run(_ws_clients(port, jobs, per_job, m, conn))


async def _grpc_clients(port: int, concurrency: int, calls: int, conn: Connection) -> None:
    import grpc

    from chimera.v1 import jobs_pb2 as pb
    from chimera.v1 import jobs_pb2_grpc

    latencies: array[float] = array("d")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = jobs_pb2_grpc.JobServiceStub(channel)
        request = pb.CreateJobRequest(brief="bench", teams=[pb.TEAM_ANTHROPIC])
        for _ in range(20):  # warm up the channel
            await stub.CreateJob(request)
        left = [calls]

        async def worker() -> None:
            while left[0] > 0:
                left[0] -= 1
                sent = time.perf_counter()
                await stub.CreateJob(request)
                latencies.append(time.perf_counter() - sent)

        started = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for _ in range(concurrency):
                tg.create_task(worker())
        elapsed = time.perf_counter() - started
    conn.send(("result", calls, elapsed, latencies.tobytes()))


def grpc_clients_main(port: int, concurrency: int, calls: int, conn: Connection) -> None:
    asyncio.run(_grpc_clients(port, concurrency, calls, conn))


# -- runs -------------------------------------------------------------------------------


@dataclass
class Run:
    rate: float
    p50_ms: float
    p99_ms: float
    cpu_per_1k: float = 0.0
    order_errors: int = 0
    delivered: int = 0
    expected: int = 0


def quantiles(raw: bytes) -> tuple[float, float]:
    values = array("d")
    values.frombytes(raw)
    if len(values) < 2:
        return 0.0, 0.0
    cuts = statistics.quantiles(values, n=100)
    return cuts[49] * 1000, cuts[98] * 1000


def run_jobs(ctx: Any, kind: str, jobs: int, per_job: int, m: int, tmp: str) -> Run:
    """J jobs of M thoughts, ``per_job`` WebSocket subscribers each."""
    db = f"{tmp}/{kind}-{time.monotonic_ns()}.db"
    server, control, port, _ = start_server(ctx, kind, db)
    ours, theirs = ctx.Pipe()
    clients = ctx.Process(target=ws_clients_main, args=(port, jobs, per_job, m, theirs))
    clients.start()
    try:
        fan._expect(ours, "ready")
        control.send(("jobs", jobs, m))
        _, started, cpu_start = fan._expect(control, "started")
        _, received, last, order_errors, raw = fan._expect(ours, "result")
        control.send(("cpu",))
        _, cpu_end = fan._expect(control, "cpu")
    finally:
        fan.stop_all(control, clients, server)
    p50, p99 = quantiles(raw)
    return Run(
        rate=received / max(last - started, 1e-9), p50_ms=p50, p99_ms=p99,
        cpu_per_1k=(cpu_end - cpu_start) / (jobs * m) * 1000, order_errors=order_errors,
        delivered=received, expected=jobs * per_job * m,
    )


def run_create(ctx: Any, kind: str, concurrency: int, calls: int, tmp: str) -> Run:
    db = f"{tmp}/{kind}-{time.monotonic_ns()}.db"
    server, control, _, port = start_server(ctx, "chimera" if kind == "chimera" else "grpc", db)
    ours, theirs = ctx.Pipe()
    clients = ctx.Process(target=grpc_clients_main, args=(port, concurrency, calls, theirs))
    clients.start()
    try:
        _, done, elapsed, raw = fan._expect(ours, "result")
    finally:
        fan.stop_all(control, clients, server)
    p50, p99 = quantiles(raw)
    return Run(rate=done / elapsed, p50_ms=p50, p99_ms=p99, delivered=done, expected=calls)


R = TypeVar("R", Run, fan.Result)


def median(runs: Sequence[R], key: Callable[[R], float] = lambda r: r.rate) -> R:
    return sorted(runs, key=key)[len(runs) // 2]


# -- the table --------------------------------------------------------------------------

HEADER = (f"{'benchmark':<34} {'chimera':>11} {'anchor':>11} {'ratio':>7}   "
          f"{'chimera p50/p99 ms':>18}   {'anchor p50/p99 ms':>17}  notes")


def row(name: str, ours: float, anchor: float, ratio: float, fmt: str = ",.0f",
        lat: tuple[Run, Run] | None = None, notes: str = "") -> None:
    latency = ""
    if lat is not None:
        a, b = lat
        latency = (f"{a.p50_ms:>8.1f} /{a.p99_ms:>7.1f}   "
                   f"{b.p50_ms:>7.1f} /{b.p99_ms:>7.1f}")
    print(f"{name:<34} {ours:>11{fmt}} {anchor:>11{fmt}} {ratio:>7.0%}   {latency:<40} {notes}",
          flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, one run each")
    parser.add_argument("--repeat", type=int, help="runs per figure; the median is kept")
    parser.add_argument("--only", default="one-job,many-jobs,create,fanout,memory",
                        help="comma-separated sections")
    parser.add_argument("--events", type=int, action="append",
                        help="one-job sizes instead of the defaults (repeatable)")
    args = parser.parse_args()
    sections = set(args.only.split(","))
    repeat = args.repeat or (1 if args.quick else 3)
    sizes = args.events or ([1000, 5000] if args.quick else [1000, 5000, 20_000, 50_000])
    many = [50] if args.quick else [50, 200]
    creates = [(1, 300), (16, 600)] if args.quick else [(1, 1000), (16, 2000), (64, 3000)]
    fanout = ([1, 100], 1000) if args.quick else ([1, 100, 1000], 3000)
    memory = 1000 if args.quick else 10_000
    ctx = mp.get_context("spawn")
    fan.raise_fd_limit()
    print(f"Chimera benchmarks: median of {repeat} run(s), {os.cpu_count()} CPUs, "
          f"Python {sys.version.split()[0]}; ratio = chimera / anchor "
          "(CPU: anchor / chimera)")
    print(HEADER)
    with tempfile.TemporaryDirectory(prefix="chimera-bench-") as tmp:
        if "one-job" in sections:
            for m in sizes:
                ours = [run_jobs(ctx, "chimera", 1, 1, m, tmp) for _ in range(repeat)]
                bare = [run_jobs(ctx, "bare", 1, 1, m, tmp) for _ in range(repeat)]
                a, b = median(ours), median(bare)
                errors = sum(r.order_errors for r in ours + bare)
                row(f"1 job x 1 sub, {m:,} ev: ev/s", a.rate, b.rate, a.rate / b.rate,
                    notes=f"delivered {a.delivered}/{a.expected}, order errors {errors}")
                ca = median(ours, key=lambda r: r.cpu_per_1k)
                cb = median(bare, key=lambda r: r.cpu_per_1k)
                row(f"1 job x 1 sub, {m:,} ev: CPU s/1k", ca.cpu_per_1k, cb.cpu_per_1k,
                    cb.cpu_per_1k / ca.cpu_per_1k, fmt=".4f")
        if "many-jobs" in sections:
            for jobs in many:
                ours = [run_jobs(ctx, "chimera", jobs, 2, 200, tmp) for _ in range(repeat)]
                bare = [run_jobs(ctx, "bare", jobs, 2, 200, tmp) for _ in range(repeat)]
                a, b = median(ours), median(bare)
                errors = sum(r.order_errors for r in ours + bare)
                row(f"{jobs} jobs x 200 ev x 2 subs: ev/s", a.rate, b.rate, a.rate / b.rate,
                    lat=(a, b),
                    notes=f"delivered {a.delivered}/{a.expected}, order errors {errors}")
        if "create" in sections:
            for concurrency, calls in creates:
                ours = [run_create(ctx, "chimera", concurrency, calls, tmp)
                        for _ in range(repeat)]
                bare = [run_create(ctx, "grpc", concurrency, calls, tmp) for _ in range(repeat)]
                a, b = median(ours), median(bare)
                row(f"CreateJob, concurrency {concurrency}: calls/s", a.rate, b.rate,
                    a.rate / b.rate, lat=(a, b), notes=f"{calls} calls")
        if "fanout" in sections:
            subscribers, m = fanout
            for n in subscribers:
                results = {
                    kind: median([fan.run_fanout(ctx, kind, n, m, tmp) for _ in range(repeat)])
                    for kind in ("chimera", "bare")
                }
                fa, fb = results["chimera"], results["bare"]
                errors = fa.order_errors + fb.order_errors
                row(f"fan-out N={n}, {m} ev: msgs/s", fa.rate, fb.rate, fa.rate / fb.rate,
                    lat=(Run(fa.rate, fa.p50_ms, fa.p99_ms), Run(fb.rate, fb.p50_ms, fb.p99_ms)),
                    notes=f"delivered {fa.delivered}/{fa.expected}, order errors {errors}")
        if "memory" in sections:
            per = {kind: fan.run_memory(ctx, kind, memory, tmp) / 1024
                   for kind in ("chimera", "bare")}
            row(f"idle subscriber at {memory:,}: KiB", per["chimera"], per["bare"],
                per["bare"] / per["chimera"], fmt=".1f")
    return 0


if __name__ == "__main__":
    sys.exit(main())
