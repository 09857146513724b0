#!/usr/bin/env python
"""Every Chimera benchmark in one table, each figure beside its anchor from the same run.

    .venv/bin/python scripts/bench.py            # the whole table, median of 3 (~15 min)
    .venv/bin/python scripts/bench.py --quick    # smaller sizes, 1 run each (~2 min)
    .venv/bin/python scripts/bench.py --only one-job,create

Sections (each server runs in a process of its own pinned to core 0, its clients in
another pinned to core 1; Chimera and anchor runs alternate, the median of each is kept;
every section also prints the server's CPU time per delivery, the clients' beside it,
so a client that is the bottleneck shows):

- ``one-job``: one job of M thought events (M = 1k / 5k / 20k / 50k), one
  WebSocket subscriber, saturated: delivered events/s, against a bare
  ``websockets.broadcast()`` server sending the same frames.
- ``many-jobs``: J jobs at once (J = 50 / 200) x 200 events x 2 subscribers each:
  delivered events/s and publish-to-receive p50/p99, against the bare server
  with one channel (connection set) per job.
- ``paced``: 200 jobs of the real simulated provider (both teams, a step every
  PACED_DELAY s) x 2 subscribers, each reading its job to the end, against the
  bare server replaying the frames of one of those jobs (recorded from the
  Chimera run's log) at their recorded pace, no store.
- ``create``: CreateJob over gRPC at concurrency 1 / 16 / 64 (each job then runs:
  5 thoughts and its code), and ``create-wait``: the same with each job left
  waiting (the simulated provider, ``--sim-delay 1000``): calls/s and p50/p99,
  against a bare ``grpc.aio`` server whose CreateJob returns a fixed reply.
- ``fanout``: ``scripts/bench_fanout.py``'s table (one job, N = 1 / 100 / 1000
  subscribers), ``fanout-paced``: one job to 1,000 subscribers at 20 events/s for
  5 s, publish-to-receive p50/p99 (the bare server publishing at the same pace),
  and ``memory``: RSS per idle subscriber at 10,000.
- ``metrics``: one job to 1 and to 1,000 subscribers, Chimera with metrics on
  (``chimera+m``) against off: server CPU per delivery and what metrics add, in %.
- ``create-windows``: a store of 5,000 jobs left waiting (created first, not
  measured), then CreateJob at concurrency 16 for ten 5 s windows: each window's p99,
  their median, max and max/median (a pause, e.g. a collection or a checkpoint, shows
  as one bad window), against the bare ``grpc.aio`` server.

WebSocket clients: ``scripts/bench-client`` (Node's ``ws``, which reads ~3x faster
than a Python client; ``npm ci`` there on first use), or ``--client python``.

The ratio column is Chimera / anchor (for CPU, anchor / Chimera: above 100% means
Chimera is cheaper). The machine's cores are shared, so absolute figures move
from run to run; the ratios against the same run's anchor are what to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from array import array
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench_fanout as fan  # scripts/, this file's directory, is on sys.path

SUBSCRIBER_BYTES = 256 << 20  # a 50k-event job must not shed its one reader
CREATE_THOUGHTS = 5


SERVER_CORE, CLIENT_CORE = 0, 1
NODE_CLIENT = Path(__file__).resolve().parent / "bench-client"
# The paced workload's jobs run the real simulated provider (both teams), pausing
# this long between steps; CreateJob "left waiting" pauses longer than any run.
PACED_DELAY = 0.02
WAITING_DELAY = 1000.0


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def pin(core: int) -> None:
    """Runs this process on one core (what ``taskset -c`` does), so the server and its
    clients never compete for one; a no-op on a machine without that core."""
    if hasattr(os, "sched_setaffinity") and core < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {core})


def node_client() -> list[str] | None:
    """The command that runs the Node load generator (installing its one package,
    ``ws``, from the lockfile the first time), or ``None`` without Node."""
    node = shutil.which("node")
    if node is None:
        return None
    if not (NODE_CLIENT / "node_modules" / "ws").is_dir():
        npm = shutil.which("npm")
        if npm is None:
            return None
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--silent"], cwd=NODE_CLIENT,
                       check=True)
    taskset = shutil.which("taskset")
    pinned = [taskset, "-c", str(CLIENT_CORE)] if taskset and (os.cpu_count() or 1) > 1 else []
    return [*pinned, node, str(NODE_CLIENT / "client.js")]


# -- servers ----------------------------------------------------------------------------


async def _chimera_server(conn: Connection, db: str, sim_delay: float | None) -> None:
    """``sim_delay``: jobs run the real simulated provider with that pause between
    steps (both teams); ``None``: the bench provider, thoughts as fast as taken."""
    from chimera.actors.jobs import JobRequest
    from chimera.auth.principal import ANONYMOUS
    from chimera.config import ServerConfig
    from chimera.events import TeamName
    from chimera.providers.base import AnswerStarted, CodeResult, Provider, ProviderEvent
    from chimera.providers.base import Thought as ThoughtEvent
    from chimera.server import ChimeraServer

    count = {"m": CREATE_THOUGHTS}
    if "BENCH_COMMIT_INTERVAL" in os.environ:  # a lever under measurement
        from chimera.actors import broadcaster
        broadcaster.COMMIT_INTERVAL = float(os.environ["BENCH_COMMIT_INTERVAL"])
    if "BENCH_FANOUT_BUDGET" in os.environ:  # a lever under measurement
        from chimera.actors import broadcaster as fanout_budget
        fanout_budget.FANOUT_BUDGET = int(os.environ["BENCH_FANOUT_BUDGET"])

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

    # Options passed only when the tree has them: an older one's ServerConfig (--tree)
    # may lack some.
    fields = getattr(ServerConfig, "__dataclass_fields__", {})
    options: dict[str, Any] = {name: value for name, value in (
        ("max_jobs_per_caller", 1_000_000), ("subscriber_max_bytes", SUBSCRIBER_BYTES),
    ) if name in fields}
    config = ServerConfig(
        grpc_port=0, ws_port=0, db=db, sim_delay=sim_delay or 0, shutdown_grace=1.0,
        max_subscribers_per_address=1_000_000, max_subscribers_per_job=1_000_000,
        **options,
    )
    server = ChimeraServer(config, providers=providers if sim_delay is None else None)
    teams = [TeamName.ANTHROPIC] if sim_delay is None else [TeamName.ANTHROPIC, TeamName.GOOGLE]
    async with asyncio.TaskGroup() as tg:
        serving = tg.create_task(server.serve())
        await server.ready.wait()
        stub(server, teams, os.environ.get("BENCH_STUB", ""))
        gc.collect()
        if os.environ.get("BENCH_GC") == "off":  # an upper bound on what GC costs
            gc.disable()
        elif os.environ.get("BENCH_GC"):  # thresholds: BENCH_GC=700/10/10 (Python's)
            gc.set_threshold(*map(int, os.environ["BENCH_GC"].split("/")))
        else:  # what `chimera serve` does (a --tree checkout from before gcpace: nothing)
            fan.pace_gc()
        if os.environ.get("BENCH_GC_FREEZE") == "1":
            gc.freeze()
        conn.send(("port", server.ws_port, server.grpc_port))
        async for command in fan._commands(conn):
            if command[0] == "jobs":
                _, jobs, m = command
                count["m"] = m
                started, cpu = time.time(), cpu_seconds()
                async with asyncio.TaskGroup() as creating:
                    for j in range(jobs):
                        creating.create_task(server.jobs.create(
                            JobRequest(brief="a login form with email and password",
                                       teams=teams, job_id=f"bench-{j}"),
                            principal=ANONYMOUS,
                        ))
                count["m"] = CREATE_THOUGHTS
                conn.send(("started", started, cpu))
            elif command[0] == "cpu":
                conn.send(("cpu", cpu_seconds()))
        server.stop()
        await serving


def stub(server: Any, teams: list[Any], what: str) -> None:
    """Analysis levers (``--lever BENCH_STUB=...``): the CreateJob cost split by
    removing one part. ``create``: the handler answers without creating a job (the
    gRPC stack and interceptors alone); ``nostart``: jobs are recorded but their
    supervisors do nothing (no team tasks, no events); ``noevents``: jobs run but
    publish nothing."""
    from chimera.actors.supervisor import JobSupervisor
    from chimera.events import utc_now
    from chimera.job import Job, TeamRun

    async def create(request: Any, *, principal: Any, caller: str = "") -> Job:
        now = utc_now()
        return Job(job_id="bench", brief=request.brief, teams={t: TeamRun(t) for t in teams},
                   create_time=now, update_time=now)

    async def idle(self: JobSupervisor) -> None:
        await asyncio.get_running_loop().create_future()

    async def publish(draft: Any) -> None:
        pass

    if what == "create":
        server.jobs.create = create
    elif what == "nostart":
        JobSupervisor.run = idle  # type: ignore[assignment,method-assign]
    elif what == "noevents":
        server.jobs._broadcaster.publish = publish


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

    async def replay(job_id: str, started: float, frames: list[tuple[float, str]]) -> None:
        """A recorded job's frames at their recorded pace: each one stamped and
        encoded once, as Chimera encodes each event once."""
        clients = channels.setdefault(f"/ws/orchestrate/{job_id}", set())
        for offset, template in frames:
            wait = started + offset - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            data = json.loads(template)
            data["job_id"] = job_id
            data["timestamp"] = iso_timestamp(utc_now())
            broadcast(clients, json.dumps(data, ensure_ascii=False, separators=(",", ":")))

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
            elif command[0] == "replay":
                _, jobs, frames = command
                started, cpu = time.time(), cpu_seconds()
                for j in range(jobs):
                    tg.create_task(replay(f"bench-{j}", started, frames))
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
    async for command in fan._commands(conn):
        if command[0] == "cpu":
            conn.send(("cpu", cpu_seconds()))
    await server.stop(1)


def server_main(kind: str, conn: Connection, db: str, tree: str = "") -> None:
    pin(SERVER_CORE)
    if tree:  # --tree: that checkout's chimera package, not this one's
        fan.use_tree(tree)
    fan.run_profiled(server_main_unprofiled, kind, conn, db)


def server_main_unprofiled(kind: str, conn: Connection, db: str) -> None:
    if kind.startswith("chimera"):  # "chimera" or "chimera:<sim delay>"
        _, _, delay = kind.partition(":")
        from chimera import eventloop

        # The loop `chimera serve` runs (uvloop when installed); CHIMERA_LOOP=asyncio
        # (e.g. --lever CHIMERA_LOOP=asyncio) for the plain one.
        eventloop.run(_chimera_server(conn, db, float(delay) if delay else None),
                      os.environ.get(eventloop.LOOP_ENV, "auto"))
    elif kind == "bare":
        asyncio.run(_bare_ws_server(conn))
    else:
        asyncio.run(_bare_grpc_server(conn))


def start_server(
    ctx: Any, kind: str, db: str, tree: str = ""
) -> tuple[Any, Connection, int, int]:
    ours, theirs = ctx.Pipe()
    process = ctx.Process(target=server_main, args=(kind, theirs, db, tree))
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
    cpu = cpu_seconds()
    conn.send(("ready", len(clients)))
    await asyncio.wait([asyncio.ensure_future(c.done) for c in clients], timeout=600)
    conn.send((
        "result", sum(c.count for c in clients), max(c.last_receive for c in clients),
        sum(c.order_errors for c in clients), latencies.tobytes(), cpu_seconds() - cpu,
    ))


def ws_clients_main(port: int, jobs: int, per_job: int, m: int, conn: Connection) -> None:
    pin(CLIENT_CORE)
    fan.raise_fd_limit()
    asyncio.run(_ws_clients(port, jobs, per_job, m, conn))


class NodeClients:
    """The Node load generator as a child process, the Python clients' pipe protocol."""

    def __init__(self, command: list[str], port: int, paths: list[str], spec: dict[str, Any]):
        spec = {"port": port, "paths": paths, **spec}
        self.process = subprocess.Popen([*command, json.dumps(spec)], stdout=subprocess.PIPE,
                                        text=True)

    def expect(self, kind: str) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the Node client ended (rc {self.process.wait()}) before {kind!r}")
        message: dict[str, Any] = json.loads(line)
        return message

    def join(self, timeout: float) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout)

    def is_alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        self.process.kill()


async def _grpc_clients(port: int, concurrency: int, calls: int, conn: Connection) -> None:
    import grpc

    from chimera.v1 import jobs_pb2 as pb
    from chimera.v1 import jobs_pb2_grpc

    latencies: array[float] = array("d")
    loop = asyncio.get_running_loop()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = jobs_pb2_grpc.JobServiceStub(channel)
        request = pb.CreateJobRequest(brief="bench", teams=[pb.TEAM_ANTHROPIC])
        for _ in range(20):  # warm up the channel
            await stub.CreateJob(request)
        conn.send(("ready",))
        await loop.run_in_executor(None, conn.recv)  # go
        left = [calls]

        async def worker() -> None:
            while left[0] > 0:
                left[0] -= 1
                sent = time.perf_counter()
                await stub.CreateJob(request)
                latencies.append(time.perf_counter() - sent)

        started, cpu = time.perf_counter(), cpu_seconds()
        async with asyncio.TaskGroup() as tg:
            for _ in range(concurrency):
                tg.create_task(worker())
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds() - cpu
    conn.send(("result", calls, elapsed, latencies.tobytes(), cpu))


def grpc_clients_main(port: int, concurrency: int, calls: int, conn: Connection) -> None:
    pin(CLIENT_CORE)
    asyncio.run(_grpc_clients(port, concurrency, calls, conn))


async def _grpc_windows(
    port: int, concurrency: int, stored: int, windows: int, seconds: float, conn: Connection
) -> None:
    """``stored`` CreateJob calls first (not measured), then calls at ``concurrency``
    for ``windows`` windows of ``seconds``: each window's latencies, by when sent."""
    import grpc

    from chimera.v1 import jobs_pb2 as pb
    from chimera.v1 import jobs_pb2_grpc

    loop = asyncio.get_running_loop()
    per_window = [array("d") for _ in range(windows)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = jobs_pb2_grpc.JobServiceStub(channel)
        request = pb.CreateJobRequest(brief="bench", teams=[pb.TEAM_ANTHROPIC])
        left = [stored]

        async def fill() -> None:
            while left[0] > 0:
                left[0] -= 1
                await stub.CreateJob(request)

        async with asyncio.TaskGroup() as tg:
            for _ in range(concurrency):
                tg.create_task(fill())
        conn.send(("ready",))
        await loop.run_in_executor(None, conn.recv)  # go
        started = time.perf_counter()
        deadline = started + windows * seconds

        async def worker() -> None:
            while (sent := time.perf_counter()) < deadline:
                await stub.CreateJob(request)
                window = min(int((sent - started) / seconds), windows - 1)
                per_window[window].append(time.perf_counter() - sent)

        cpu = cpu_seconds()
        async with asyncio.TaskGroup() as tg:
            for _ in range(concurrency):
                tg.create_task(worker())
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds() - cpu
    conn.send(("result", elapsed, [w.tobytes() for w in per_window], cpu))


def grpc_windows_main(
    port: int, concurrency: int, stored: int, windows: int, seconds: float, conn: Connection
) -> None:
    pin(CLIENT_CORE)
    asyncio.run(_grpc_windows(port, concurrency, stored, windows, seconds, conn))


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
    server_us: float = 0.0  # the server's CPU per delivery (per call for CreateJob), µs
    client_us: float = 0.0  # the clients' CPU per delivery (per call), µs
    windows: tuple[float, ...] = ()  # create-windows: each window's p99, ms


def quantiles(raw: bytes) -> tuple[float, float]:
    values = array("d")
    values.frombytes(raw)
    if len(values) < 2:
        return 0.0, 0.0
    cuts = statistics.quantiles(values, n=100)
    return cuts[49] * 1000, cuts[98] * 1000


def recorded_frames(db: str, job_id: str) -> list[tuple[float, str]]:
    """A finished job's frames from its log, each with its offset (seconds) from the
    first: what the bare anchor replays."""
    import sqlite3

    from chimera.events import parse_timestamp

    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(
            "SELECT frame FROM events WHERE job_id = ? ORDER BY seq", (job_id,)
        ).fetchall()
    frames = [bytes(r[0]).decode() if isinstance(r[0], bytes) else r[0] for r in rows]
    stamps = [parse_timestamp(json.loads(f)["timestamp"]).timestamp() for f in frames]
    return [(t - stamps[0], f) for t, f in zip(stamps, frames, strict=True)]


def run_jobs(
    ctx: Any, kind: str, jobs: int, per_job: int, m: int, tmp: str,
    node: list[str] | None = None, replay: list[tuple[float, str]] | None = None,
    record: list[list[tuple[float, str]]] | None = None, tree: str = "",
) -> Run:
    """J jobs of M thoughts, ``per_job`` WebSocket subscribers each, read by the Node
    client when ``node`` is its command (else by the Python one). ``kind``
    "chimera:<delay>": the real simulated provider, each subscriber reading its job
    to the end; the first job's frames are appended to ``record``. ``replay``: the
    bare server sends those frames instead of M thoughts. ``tree``: the checkout whose
    Chimera serves (``--tree``; "": this one)."""
    db = f"{tmp}/{kind}-{time.monotonic_ns()}.db"
    paced = kind.startswith("chimera:") or replay is not None
    server, control, port, _ = start_server(ctx, kind, db, tree)
    paths = [f"/ws/orchestrate/bench-{j}" for j in range(jobs) for _ in range(per_job)]
    clients: Any
    if node is not None:
        clients = NodeClients(node, port, paths, {"count": "job"} if paced else
                              {"count": "thought", "expect": m})
    else:
        ours, theirs = ctx.Pipe()
        clients = ctx.Process(target=ws_clients_main, args=(port, jobs, per_job, m, theirs))
        clients.start()
    try:
        if node is not None:
            clients.expect("ready")
        else:
            fan._expect(ours, "ready")
        control.send(("jobs", jobs, m) if replay is None else ("replay", jobs, replay))
        _, started, cpu_start = fan._expect(control, "started")
        if node is not None:
            result = clients.expect("result")["result"]
            received, last, order_errors = (result["received"], result["last"],
                                            result["order_errors"])
            p50, p99, client_cpu = result["p50_ms"], result["p99_ms"], result["cpu_s"]
        else:
            _, received, last, order_errors, raw, client_cpu = fan._expect(ours, "result")
            p50, p99 = quantiles(raw)
        control.send(("cpu",))
        _, cpu_end = fan._expect(control, "cpu")
    finally:
        fan.stop_all(control, clients, server)
    if record is not None and kind.startswith("chimera:"):
        record.append(recorded_frames(db, "bench-0"))
    events = jobs * m if not paced else received / per_job
    return Run(
        rate=received / max(last - started, 1e-9), p50_ms=p50, p99_ms=p99,
        cpu_per_1k=(cpu_end - cpu_start) / max(events, 1) * 1000, order_errors=order_errors,
        delivered=received, expected=received if paced else jobs * per_job * m,
        server_us=(cpu_end - cpu_start) / max(received, 1) * 1e6,
        client_us=client_cpu / max(received, 1) * 1e6,
    )


def run_create(
    ctx: Any, kind: str, concurrency: int, calls: int, tmp: str, tree: str = ""
) -> Run:
    """``kind``: "grpc" (the bare server), "chimera" (each job then runs) or
    "chimera:<delay>" (each job left waiting)."""
    db = f"{tmp}/{kind}-{time.monotonic_ns()}.db"
    server, control, _, port = start_server(ctx, kind, db, tree)
    ours, theirs = ctx.Pipe()
    clients = ctx.Process(target=grpc_clients_main, args=(port, concurrency, calls, theirs))
    clients.start()
    try:
        fan._expect(ours, "ready")
        control.send(("cpu",))
        _, cpu_start = fan._expect(control, "cpu")
        ours.send(("go",))
        _, done, elapsed, raw, client_cpu = fan._expect(ours, "result")
        control.send(("cpu",))
        _, cpu_end = fan._expect(control, "cpu")
    finally:
        fan.stop_all(control, clients, server)
    p50, p99 = quantiles(raw)
    return Run(rate=done / elapsed, p50_ms=p50, p99_ms=p99, delivered=done, expected=calls,
               server_us=(cpu_end - cpu_start) / done * 1e6, client_us=client_cpu / done * 1e6)


def run_windows(
    ctx: Any, kind: str, concurrency: int, stored: int, windows: int, seconds: float,
    tmp: str, tree: str = "",
) -> Run:
    """create-windows: a store of ``stored`` jobs left waiting, then CreateJob at
    ``concurrency`` for ``windows`` windows of ``seconds``. ``p50_ms``/``p99_ms``: the
    median and the max of the windows' p99s."""
    db = f"{tmp}/{kind}-{time.monotonic_ns()}.db"
    server, control, _, port = start_server(ctx, kind, db, tree)
    ours, theirs = ctx.Pipe()
    clients = ctx.Process(target=grpc_windows_main,
                          args=(port, concurrency, stored, windows, seconds, theirs))
    clients.start()
    try:
        fan._expect(ours, "ready")
        control.send(("cpu",))
        _, cpu_start = fan._expect(control, "cpu")
        ours.send(("go",))
        _, elapsed, raws, client_cpu = fan._expect(ours, "result")
        control.send(("cpu",))
        _, cpu_end = fan._expect(control, "cpu")
    finally:
        fan.stop_all(control, clients, server)
    p99s = tuple(quantiles(raw)[1] for raw in raws)
    done = sum(len(raw) // 8 for raw in raws)  # doubles
    return Run(rate=done / elapsed, p50_ms=statistics.median(p99s), p99_ms=max(p99s),
               delivered=done, expected=done, windows=p99s,
               server_us=(cpu_end - cpu_start) / max(done, 1) * 1e6,
               client_us=client_cpu / max(done, 1) * 1e6)


R = TypeVar("R", Run, fan.Result)


def median(runs: Sequence[R], key: Callable[[R], float] = lambda r: r.rate) -> R:
    return sorted(runs, key=key)[len(runs) // 2]


# --lever ENV=VALUE[,ENV=VALUE…]: each Chimera run is made again with those variables in
# the server's environment, alternating with the anchor's runs (before/after, same run).
LEVERS: list[tuple[str, str]] = []  # (label, "NAME=VALUE[,NAME=VALUE…]")
# --tree LABEL=DIR: each Chimera run is made again by the Chimera of checkout DIR.
TREES: list[tuple[str, str]] = []  # ("@LABEL", DIR)


@contextlib.contextmanager
def environment(settings: str) -> Iterator[None]:
    """``NAME=VALUE[,NAME=VALUE…]`` in this process's environment, so the processes it
    spawns get them."""
    old = dict(os.environ)
    os.environ.update(setting.split("=", 1) for setting in settings.split(","))  # type: ignore[misc]
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(old)


def interleaved(
    repeat: int, ours: Callable[..., R], anchor: Callable[[], R],
    key: Callable[[R], float] = lambda r: r.rate,
) -> tuple[R, R, int, list[tuple[str, R]]]:
    """Chimera, (Chimera with each lever, each other tree's Chimera,) anchor, Chimera,
    …: all see the same load on the machine. ``ours`` takes ``tree=DIR`` for another
    checkout's. Returns the medians (by ``key``), the order errors of all runs and each
    lever's and tree's median."""
    a: list[R] = []
    b: list[R] = []
    # (label, environment settings, checkout): each lever, then each other tree.
    variants = [*((label, settings, "") for label, settings in LEVERS),
                *((label, "", tree) for label, tree in TREES)]
    others: list[list[R]] = [[] for _ in variants]
    for _ in range(repeat):
        a.append(ours())
        for (_, settings, tree), runs in zip(variants, others, strict=True):
            with environment(settings) if settings else contextlib.nullcontext():
                runs.append(ours(tree=tree) if tree else ours())
        b.append(anchor())
    errors = sum(r.order_errors for r in a + b + [r for runs in others for r in runs])
    return median(a, key), median(b, key), errors, [
        (label, median(runs, key)) for (label, _, _), runs in zip(variants, others, strict=True)
    ]


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
    parser.add_argument("--only",
                        default="one-job,many-jobs,paced,create,create-wait,fanout,memory",
                        help="comma-separated sections")
    parser.add_argument("--events", type=int, action="append",
                        help="one-job sizes instead of the defaults (repeatable)")
    parser.add_argument("--client", choices=("node", "python"), default="node",
                        help="the WebSocket load generator (node: scripts/bench-client, "
                        "installed on first use; python when Node is missing)")
    parser.add_argument("--calls", type=int, help="CreateJob calls per run instead of the defaults")
    parser.add_argument("--lever", action="append", default=[], metavar="ENV=VALUE[,...]",
                        help="also run each Chimera server with these in its environment "
                        "(repeatable): before and after, interleaved in one run")
    parser.add_argument("--tree", action="append", default=[], metavar="LABEL=DIR",
                        help="also run the Chimera of checkout DIR (rows [@LABEL]), "
                        "interleaved (repeatable)")
    args = parser.parse_args()
    LEVERS.extend((lever, lever) for lever in args.lever)
    for spec in args.tree:
        label, _, directory = spec.partition("=")
        checkout = Path(directory) / "chimera" / "__init__.py"
        if not label or not directory or not checkout.is_file():
            parser.error(f"--tree {spec!r}: give LABEL=DIR, DIR a checkout with chimera/")
        TREES.append((f"@{label}", str(Path(directory).resolve())))
    sections = set(args.only.split(","))
    repeat = args.repeat or (1 if args.quick else 3)
    sizes = args.events or ([1000, 5000] if args.quick else [1000, 5000, 20_000, 50_000])
    many = [50] if args.quick else [50, 200]
    creates = [(1, 300), (16, 600)] if args.quick else [(1, 1000), (16, 2000), (64, 3000)]
    if args.calls:
        creates = [(c, args.calls) for c, _ in creates]
    fanout = ([1, 100], 1000) if args.quick else ([1, 100, 1000], 3000)
    memory = 1000 if args.quick else 10_000
    ctx = mp.get_context("spawn")
    os.environ[fan.CORES_ENV] = f"{SERVER_CORE},{CLIENT_CORE}"  # the fanout sections' too
    fan.raise_fd_limit()
    node = node_client() if args.client == "node" else None
    print(f"Chimera benchmarks: median of {repeat} run(s), interleaved, {os.cpu_count()} CPUs "
          f"(server on core {SERVER_CORE}, clients on core {CLIENT_CORE}), "
          f"Python {sys.version.split()[0]}, WebSocket clients: "
          f"{'Node ws' if node else 'Python'}; ratio = chimera / anchor (CPU: anchor / chimera)")
    print(HEADER)

    def report(name: str, rate: str, measured: tuple[Run, Run, int, list[tuple[str, Run]]],
               notes: str = "", unit: str = "delivery") -> None:
        a, b, errors, levers = measured
        for label, ours in [("", a), *((f" [{lever}]", r) for lever, r in levers)]:
            row(f"{name}{label}: {rate}", ours.rate, b.rate, ours.rate / b.rate, lat=(ours, b),
                notes=f"{notes}delivered {ours.delivered}/{ours.expected}, "
                      f"order errors {errors}")
            row(f"{name}{label}: server CPU us/{unit}", ours.server_us, b.server_us,
                b.server_us / max(ours.server_us, 1e-9), fmt=",.1f",
                notes=f"client CPU us/{unit}: {ours.client_us:.1f} (chimera run), "
                      f"{b.client_us:.1f} (anchor run)")

    def fan_report(name: str, rate: str,
                   measured: tuple[fan.Result, fan.Result, int, list[tuple[str, fan.Result]]],
                   ) -> None:
        a, b, errors, others = measured
        for label, ours in [("", a), *((f" [{other}]", r) for other, r in others)]:
            row(f"{name}{label}: {rate}", ours.rate, b.rate, ours.rate / b.rate,
                lat=(Run(ours.rate, ours.p50_ms, ours.p99_ms), Run(b.rate, b.p50_ms, b.p99_ms)),
                notes=f"p99 {ours.p99_ms / max(b.p99_ms, 1e-9):.1f}x the anchor's; delivered "
                      f"{ours.delivered}/{ours.expected}, order errors {errors}")

    with tempfile.TemporaryDirectory(prefix="chimera-bench-") as tmp:
        if "one-job" in sections:
            for m in sizes:
                report(f"1 job x 1 sub, {m:,} ev", "ev/s", interleaved(
                    repeat, partial(run_jobs, ctx, "chimera", 1, 1, m, tmp, node),
                    partial(run_jobs, ctx, "bare", 1, 1, m, tmp, node)))
        if "many-jobs" in sections:
            for jobs in many:
                report(f"{jobs} jobs x 200 ev x 2 subs", "ev/s", interleaved(
                    repeat, partial(run_jobs, ctx, "chimera", jobs, 2, 200, tmp, node),
                    partial(run_jobs, ctx, "bare", jobs, 2, 200, tmp, node)))
        if "paced" in sections:
            jobs = 50 if args.quick else 200
            recorded: list[list[tuple[float, str]]] = []
            measured = interleaved(
                repeat,
                lambda tree="": run_jobs(ctx, f"chimera:{PACED_DELAY}", jobs, 2, 0, tmp, node,
                                         record=recorded, tree=tree),
                lambda: run_jobs(ctx, "bare", jobs, 2, 0, tmp, node, replay=recorded[0]))
            report(f"{jobs} jobs x 2 subs, paced sim", "msg/s", measured,
                   notes=f"{len(recorded[0])} frames a job, both teams, "
                         f"{PACED_DELAY * 1000:.0f} ms steps; ")
        for section, kind, what in (("create", "chimera", "then running"),
                                    ("create-wait", f"chimera:{WAITING_DELAY:g}", "left waiting")):
            if section not in sections:
                continue
            for concurrency, calls in creates:
                report(f"CreateJob ({what}), c={concurrency}", "calls/s", interleaved(
                    repeat, partial(run_create, ctx, kind, concurrency, calls, tmp),
                    partial(run_create, ctx, "grpc", concurrency, calls, tmp)), unit="call")
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
        if "fanout-paced" in sections:
            n, rate = 1000, 20.0
            m = int(rate * fan.PACED_SECONDS)

            def paced_fanout(kind: str, tree: str = "") -> fan.Result:
                return fan.run_scaled(ctx, [f"{tmp}/{kind}-{time.monotonic_ns()}.db"], n, m,
                                      rate, tree, kind)

            fan_report(f"fan-out N={n}, {rate:g} ev/s", "msgs/s", interleaved(
                repeat, partial(paced_fanout, "chimera"), partial(paced_fanout, "bare"),
                key=lambda r: r.p99_ms))
        if "metrics" in sections:
            m = 1000 if args.quick else 3000
            for n in (1, 1000):
                on, off, errors, others = interleaved(
                    repeat, partial(fan.run_fanout, ctx, "chimera+m", n, m, tmp),
                    partial(fan.run_fanout, ctx, "chimera", n, m, tmp),
                    key=lambda r: r.cpu_us)
                for label, ours in [("", on), *((f" [{other}]", r) for other, r in others)]:
                    # The ratio as for every CPU row: anchor (off) / chimera (on).
                    row(f"metrics on/off N={n}{label}: us/msg", ours.cpu_us, off.cpu_us,
                        off.cpu_us / ours.cpu_us, fmt=",.1f",
                        notes=f"server CPU per delivery, {m} ev: metrics cost "
                              f"{ours.cpu_us / off.cpu_us - 1:+.1%}; msgs/s {ours.rate:,.0f} on, "
                              f"{off.rate:,.0f} off; order errors {errors}")
        if "create-windows" in sections:
            stored, windows, seconds = (1000, 5, 2.0) if args.quick else (5000, 10, 5.0)
            a, b, _, variants = interleaved(
                repeat,
                partial(run_windows, ctx, f"chimera:{WAITING_DELAY:g}", 16, stored, windows,
                        seconds, tmp),
                partial(run_windows, ctx, "grpc", 16, stored, windows, seconds, tmp),
                key=lambda r: r.p99_ms)
            for label, run in [("", a), *((f" [{other}]", r) for other, r in variants)]:
                name = f"CreateJob c=16, {stored:,} waiting{label}"
                row(f"{name}: median p99", run.p50_ms, b.p50_ms, run.p50_ms / b.p50_ms,
                    fmt=",.1f", notes=f"ms, {windows} windows of {seconds:g} s; calls/s "
                    f"{run.rate:,.0f} (chimera), {b.rate:,.0f} (anchor)")
                row(f"{name}: max p99", run.p99_ms, b.p99_ms, run.p99_ms / b.p99_ms,
                    fmt=",.1f", notes="ms; p99 per window: chimera "
                    + " ".join(f"{w:.0f}" for w in run.windows)
                    + ", anchor " + " ".join(f"{w:.0f}" for w in b.windows))
                spread = run.p99_ms / run.p50_ms, b.p99_ms / b.p50_ms
                row(f"{name}: max/median", spread[0], spread[1], spread[0] / spread[1],
                    fmt=",.2f", notes="the windows' spread: 1.00 = every window alike")
        if "memory" in sections:
            per = {kind: fan.run_memory(ctx, kind, memory, tmp) / 1024
                   for kind in ("chimera", "bare")}
            row(f"idle subscriber at {memory:,}: KiB", per["chimera"], per["bare"],
                per["bare"] / per["chimera"], fmt=".1f")
    return 0


if __name__ == "__main__":
    sys.exit(main())
