#!/usr/bin/env python
"""Fan-out benchmark: Chimera against a bare ``websockets.broadcast()`` server.

    .venv/bin/python scripts/bench_fanout.py              # N = 1, 100, 1000 and memory at 10,000
    .venv/bin/python scripts/bench_fanout.py -n 100 --memory 0
    .venv/bin/python scripts/bench_fanout.py --redis     # SQLite vs Redis vs 2 processes
    .venv/bin/python scripts/bench_fanout.py -n 1000 --memory 0 --metrics   # metrics on vs off
    .venv/bin/python scripts/bench_fanout.py --tree before=../chimera-old   # this tree vs another
    .venv/bin/python scripts/bench_fanout.py -n 100 --slow 10   # 10 of 100 subscribers fall behind

For each N, each server runs in a process of its own and N WebSocket clients
in another. The Chimera server is the real thing (job manager, supervisor, team
actor, broadcaster with its SQLite log in WAL mode on a file, WebSocket
gateway); its one team's provider yields M thought-sized events (~300 bytes on
the wire) as fast as the pipeline takes them. The bare server keeps its
connections in a set and calls ``websockets.broadcast()`` with the same JSON
frames, yielding to the loop between events like the provider does. Each
thought carries the wall-clock time it was produced; clients (a minimal
asyncio WebSocket reader, so that the clients are not the bottleneck) record
when they received it.

Printed per server: delivered messages/s (N x M over first publish to last
receive), publish-to-receive latency p50/p99, order errors (gaps or
duplicates seen by clients, which must be 0), and the server process's CPU time
per delivered message (medians of the runs); then the Chimera/bare ratio (for
CPU, bare/Chimera: 100% means as cheap as the bare server).
The memory phase connects ``--memory`` idle subscribers and prints the server
process's RSS growth per subscriber.

``--redis`` compares, in the same run and at N = 100 and 1000 (or ``-n``): one
Chimera process on SQLite, one on Redis (a redis-server the benchmark starts on
a free port in a temporary directory, append-only file on), and two processes
on that Redis (as ``--workers 2`` runs them) with the subscribers spread half
and half over them, the job running in the first. Each at saturation
(delivered msgs/s) and at a fixed rate below it (``--rate`` events/s:
publish-to-receive p50/p99).
``--metrics`` also runs Chimera with its metrics on (``chimera+m``: the
/metrics listener, per-delivery counting), alternating with the plain runs,
and prints on/off.
``--tree LABEL=DIR`` (repeatable) also runs the Chimera of another checkout
(``chimera@LABEL``: DIR's ``chimera`` package with this environment's
dependencies, e.g. a ``git worktree`` of an older commit), alternating with
the others, so a change is measured before and after against one anchor.
``--slow K``: K of the N subscribers ("slow") read nothing from their greeting
until the others ("fast") have every event, then read their backlog: in
Chimera, what did not fit in the kernel's buffers waited in their subscription's
queue and now goes out through its writer (the queued path; the fast ones get
the direct path). Slow clients advertise Ethernet-sized segments and a 4 KiB
receive buffer, so the server's kernel holds ~150 KB of a backlog, not all of it;
M defaults to 2000 here, so that the rest (~400 B an event) stays within the
default 1 MiB bound and no slow client is shed ("shed": closed 4008). Printed per
server: the fast ones (rate and CPU from publish until they have every event),
the slow ones (from resuming to their last event; latency not shown, it is
mostly their own pause), and the fast ones "alone" (N - K clients, no slow
ones) in a run of their own; then the ratios to bare, and "fast/alone" per
server (100%: the slow subscribers cost the fast ones nothing; CPU alone/fast).
The bare server keeps a slow client's frames in its write buffer (``broadcast()``
has no backpressure), so its catch-up is one big write.

Limits: a frame is ~400 B, so M = 3000 (1.2 MB) is just past Chimera's default
1 MiB per-subscriber bound: a client that keeps up never holds more than a
small part of it (a stalled one would be shed; ``--slow`` keeps M within it);
the machine's cores are shared by the server and the clients.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import multiprocessing as mp
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

JOB_ID = "bench"
# ~300 bytes per frame once wrapped in Chimera's JSON envelope.
PAD = "The component needs a controlled email field, a password field with a toggle, " \
    "inline validation messages and a disabled submit button while the request is "[:150]
STAMP = len("1764099999.123456")
PACED_SECONDS = 5.0  # length of a --redis latency run


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def thought(i: int) -> str:
    """The publish time first (parsed by the clients), the index (checked for order)."""
    return f"{time.time():.6f} #{i:07d} {PAD}"


# -- servers (each in its own process) ------------------------------------------------


async def _commands(conn: Connection) -> AsyncIterator[tuple[Any, ...]]:
    loop = asyncio.get_running_loop()
    while True:
        command: tuple[Any, ...] = await loop.run_in_executor(None, conn.recv)
        yield command
        if command[0] == "stop":
            return


async def _chimera_server(conn: Connection, db: str, metrics: bool) -> None:
    """``db``: a SQLite file, or a ``redis://`` URL (the Redis store)."""
    from chimera.actors.jobs import JobRequest
    from chimera.auth.principal import SYSTEM
    from chimera.config import ServerConfig
    from chimera.events import TeamName
    from chimera.providers.base import AnswerStarted, CodeResult, Provider, ProviderEvent
    from chimera.providers.base import Thought as ThoughtEvent
    from chimera.server import ChimeraServer

    count = {"m": 0}
    pace = {"delay": 0.0}
    cpu = {"publish": 0.0}
    if "BENCH_FANOUT_BUDGET" in os.environ:  # a lever under measurement
        from chimera.actors import broadcaster
        broadcaster.FANOUT_BUDGET = int(os.environ["BENCH_FANOUT_BUDGET"])

    class BenchProvider:
        model = "bench"

        async def stream(self, brief: str) -> AsyncIterator[ProviderEvent]:
            for i in range(count["m"]):
                yield ThoughtEvent(thought(i))
                await asyncio.sleep(pace["delay"])  # 0: as the bare publisher does
            yield AnswerStarted()
            yield CodeResult("export const x = 1;", "tsx", 1)

    def providers(team: TeamName) -> Provider:
        return BenchProvider()

    # Every client connects from 127.0.0.1: lift the per-address and per-job
    # subscriber limits (100 and 1000 by default) above the largest N measured.
    # Options passed only when used: an older tree's ServerConfig (--tree) may lack them.
    options: dict[str, Any] = {}
    if db.startswith("redis://"):
        options["redis_url"] = db
    if metrics:
        options["metrics_port"] = 0
    config = ServerConfig(
        grpc_port=0, ws_port=0, db=db, sim_delay=0, shutdown_grace=1.0,
        max_subscribers_per_address=1_000_000, max_subscribers_per_job=1_000_000,
        **options,
    )
    server = ChimeraServer(config, providers=providers)
    async with asyncio.TaskGroup() as tg:
        serving = tg.create_task(server.serve())
        await server.ready.wait()
        gc.collect()
        pace_gc()
        conn.send(("port", server.ws_port, rss_bytes()))
        async for command in _commands(conn):
            if command[0] == "publish":
                count["m"] = command[1]
                rate = command[2] if len(command) > 2 else 0
                pace["delay"] = 1 / rate if rate else 0.0
                cpu["publish"] = time.process_time()
                started = time.time()
                await server.jobs.create(
                    JobRequest(brief="bench", teams=[TeamName.ANTHROPIC], job_id=JOB_ID),
                    principal=SYSTEM,
                )
                conn.send(("started", started))
            elif command[0] == "rss":
                gc.collect()
                conn.send(("rss", rss_bytes()))
            elif command[0] == "cpu":
                conn.send(("cpu", time.process_time() - cpu["publish"]))
        server.stop()
        await serving


def pace_gc() -> None:
    """The collector paced as `chimera serve` paces it after start-up, when this
    tree has ``chimera.gcpace`` (an older --tree checkout may not: Python's default)."""
    try:
        from chimera import gcpace
        from chimera.defaults import DEFAULT_GC_THRESHOLD
    except ImportError:
        return
    gcpace.pace(DEFAULT_GC_THRESHOLD)


async def _bare_server(conn: Connection) -> None:
    from websockets.asyncio.server import ServerConnection, broadcast, serve

    from chimera.events import iso_timestamp, utc_now

    clients: set[ServerConnection] = set()

    async def handler(ws: ServerConnection) -> None:
        clients.add(ws)
        try:
            await ws.send('{"type":"connected"}')
            await ws.wait_closed()
        finally:
            clients.discard(ws)

    async def publish(m: int, rate: float) -> None:
        for i in range(m):
            frame = json.dumps(
                {"type": "thought_added", "team": "anthropic", "data": {"thought": thought(i)},
                 "timestamp": iso_timestamp(utc_now()), "job_id": JOB_ID, "seq": i + 3},
                ensure_ascii=False, separators=(",", ":"),
            )
            broadcast(clients, frame)
            await asyncio.sleep(1 / rate if rate else 0)  # the pace Chimera's provider keeps

    async with (
        serve(handler, "127.0.0.1", 0, compression=None, max_size=16 * 1024) as server,
        asyncio.TaskGroup() as tg,
    ):
        gc.collect()
        conn.send(("port", server.sockets[0].getsockname()[1], rss_bytes()))
        async for command in _commands(conn):
            if command[0] == "publish":
                published = time.process_time()
                started = time.time()
                tg.create_task(publish(command[1], command[2] if len(command) > 2 else 0))
                conn.send(("started", started))
            elif command[0] == "rss":
                gc.collect()
                conn.send(("rss", rss_bytes()))
            elif command[0] == "cpu":
                conn.send(("cpu", time.process_time() - published))


def use_tree(tree: str) -> None:
    """--tree: this process imports that checkout's chimera package, not this one's.
    Also drops the editable install's finder (appended to ``sys.meta_path``): it
    would otherwise supply, from this tree, any module the older one lacks."""
    sys.path.insert(0, tree)
    sys.meta_path[:] = [finder for finder in sys.meta_path
                        if not getattr(finder, "__module__", "").startswith("__editable__")]


# scripts/bench.py sets "SERVER_CORE,CLIENT_CORE": its rows from this file's runs
# are pinned as its own are (spawned processes inherit the environment).
CORES_ENV = "BENCH_CORES"


def pin_to(role: int) -> None:
    """This process on core ``CORES_ENV``[role] (0: server, 1: clients), if set and
    the machine has it."""
    cores = os.environ.get(CORES_ENV)
    if cores and hasattr(os, "sched_setaffinity"):
        core = int(cores.split(",")[role])
        if core < (os.cpu_count() or 1):
            os.sched_setaffinity(0, {core})


def server_main(kind: str, conn: Connection, db: str, tree: str = "") -> None:
    pin_to(0)
    if tree:
        use_tree(tree)
    run_profiled(server_main_unprofiled, kind, conn, db)


def run_profiled(
    serve: Callable[[str, Connection, str], None], kind: str, conn: Connection, db: str
) -> None:
    """Runs one benchmark server (also for scripts/bench.py), under cProfile when asked."""
    raise_fd_limit()
    profile = os.environ.get("BENCH_PROFILE")  # a directory: cProfile each server into it
    sampled = os.environ.get("BENCH_PYSPY")  # a directory: py-spy samples of each server
    if sampled:
        # Collapsed stacks of every thread (idle ones left out), until this process ends.
        subprocess.Popen([
            str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(os.getpid()),
            "--format", "raw", "--threads", "--rate", "250", "--nonblocking",
            "--output", f"{sampled}/{kind}-{os.getpid()}.txt",
        ], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if profile:
        import cProfile

        with cProfile.Profile() as profiler:
            serve(kind, conn, db)
        profiler.dump_stats(f"{profile}/{kind}-{os.getpid()}.prof")
    else:
        serve(kind, conn, db)


def server_main_unprofiled(kind: str, conn: Connection, db: str) -> None:
    if kind.startswith("chimera"):
        serving = _chimera_server(conn, db, metrics=kind == "chimera+m")
        try:
            from chimera import eventloop
        except ImportError:  # a --tree checkout from before the loop setting
            asyncio.run(serving)
        else:
            # The loop `chimera serve` runs (uvloop when installed); CHIMERA_LOOP=asyncio
            # for the plain one.
            eventloop.run(serving, os.environ.get(eventloop.LOOP_ENV, "auto"))
    else:
        asyncio.run(_bare_server(conn))


# -- clients (one process for all N) --------------------------------------------------


class Client(asyncio.Protocol):
    """A minimal WebSocket reader: handshake, unmasked server frames, pongs.

    Counts thought frames, checks their order and records their latency.
    """

    def __init__(
        self, path: str, port: int, m: int, latencies: array[float], slow: bool = False
    ) -> None:
        loop = asyncio.get_running_loop()
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.m = m
        self.latencies = latencies
        self.buf = bytearray()
        self.upgraded = False
        self.greeted: asyncio.Future[None] = loop.create_future()
        self.done: asyncio.Future[None] = loop.create_future()
        self.count = 0
        self.order_errors = 0
        self.last_receive = 0.0
        self.close_code: int | None = None
        self.transport: asyncio.Transport | None = None
        # --slow: stops reading once greeted, until resumed (then reads its backlog).
        self.slow = slow

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        for future in (self.greeted, self.done):
            if not future.done():
                future.set_exception(ConnectionError(f"closed early ({self.close_code})"))

    def data_received(self, data: bytes) -> None:
        now = time.time()
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if b" 101 " not in buf[:end]:
                raise ConnectionError(bytes(buf[:end]).decode())
            del buf[: end + 4]
            self.upgraded = True
        pos, size = 0, len(buf)
        while size - pos >= 2:
            length, head = buf[pos + 1] & 0x7F, 2
            if length == 126:
                if size - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            start, end = pos + head, pos + head + length
            if end > size:
                break
            opcode = buf[pos] & 0x0F
            if opcode == 1:
                self.on_text(buf, start, end, now)
            elif opcode == 8:
                self.close_code = int.from_bytes(buf[start : start + 2], "big")
                self.finish()
            elif opcode == 9 and self.transport is not None:
                self.transport.write(bytes([0x8A, 0x80 | length, 0, 0, 0, 0]) + buf[start:end])
            pos = end
        del buf[:pos]

    def on_text(self, buf: bytearray, start: int, end: int, now: float) -> None:
        if not self.greeted.done():
            self.greeted.set_result(None)
            if self.slow and self.transport is not None:
                self.transport.pause_reading()
            return
        at = buf.find(b'"thought":"', start, end)
        if at >= 0:
            at += 11
        else:  # the guide's thought object: {"id": …, "text": …}
            if not buf.startswith(b'{"type":"thought_added"', start):
                return  # a code_delta has a "text" too, but no stamp
            at = buf.find(b'"text":"', start, end)
            if at < 0:
                return
            at += 8
        self.latencies.append(now - float(buf[at : at + STAMP]))
        index = int(buf[at + STAMP + 2 : at + STAMP + 9])
        if index != self.count:
            self.order_errors += 1
        self.count += 1
        self.last_receive = now
        if self.count == self.m:
            self.finish()

    def finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)
        if self.transport is not None:
            self.transport.abort()


async def _clients(
    port: int | list[int], path: str, n: int, m: int, conn: Connection, slow: int = 0
) -> None:
    """N clients; with several ports, spread over them in turn. The first ``slow``
    of them stop reading once greeted (see :func:`_slow_clients`)."""
    loop = asyncio.get_running_loop()
    latencies: array[float] = array("d")
    slow_latencies: array[float] = array("d")
    clients: list[Client] = []
    # Well under asyncio's listen backlog (100): past it the kernel drops the SYNs
    # and resets the connections the server never saw (TcpExtListenOverflows).
    gate = asyncio.Semaphore(64)
    ports = port if isinstance(port, list) else [port]
    turn = iter(range(n))

    async def open_one() -> None:
        async with gate:
            index = next(turn)
            port = ports[index % len(ports)]
            lagging = index < slow
            client = Client(path, port, m, slow_latencies if lagging else latencies, lagging)
            if lagging:
                await loop.create_connection(lambda: client, sock=await _slow_socket(port))
            else:
                await loop.create_connection(lambda: client, "127.0.0.1", port)
            await asyncio.wait_for(client.greeted, 60)
            clients.append(client)

    async with asyncio.TaskGroup() as tg:
        for _ in range(n):
            tg.create_task(open_one())
    conn.send(("ready", n))
    if m == 0:  # memory phase: stay idle until told
        await loop.run_in_executor(None, conn.recv)
        return
    if slow:
        await _slow_clients(clients, latencies, slow_latencies, conn)
        return
    await asyncio.wait([asyncio.ensure_future(c.done) for c in clients], timeout=300)
    received = sum(c.count for c in clients)
    conn.send((
        "result", received, max(c.last_receive for c in clients),
        sum(c.order_errors for c in clients), latencies.tobytes(),
    ))


async def _slow_socket(port: int) -> socket.socket:
    """A slow client's connection: Ethernet-sized segments (MSS 1460) and a small
    receive buffer, as a remote reader on a slow link has. On loopback defaults
    (MSS ~64 KiB, a window that lets the sender's buffer grow to 1-4 MiB) the
    server's kernel would hold a stalled reader's whole backlog and nothing would
    wait in Chimera's queue; this way it holds ~150 KB (~500 events)."""
    sock = socket.socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1460)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


async def _slow_clients(
    clients: list[Client], latencies: array[float], slow_latencies: array[float],
    conn: Connection,
) -> None:
    """--slow: reports the fast clients once they have every event, waits to be told
    to resume (the server's CPU time is read in between), then lets the slow ones
    read their backlog and reports them."""
    loop = asyncio.get_running_loop()
    fast = [c for c in clients if not c.slow]
    slow = [c for c in clients if c.slow]
    await asyncio.wait([asyncio.ensure_future(c.done) for c in fast], timeout=300)
    conn.send((
        "fast", sum(c.count for c in fast), max(c.last_receive for c in fast),
        sum(c.order_errors for c in fast), latencies.tobytes(),
    ))
    await loop.run_in_executor(None, conn.recv)
    resumed = time.time()
    for client in slow:
        if client.transport is not None:
            client.transport.resume_reading()
    await asyncio.wait([asyncio.ensure_future(c.done) for c in slow], timeout=300)
    conn.send((
        "slow", sum(c.count for c in slow), max(c.last_receive for c in slow),
        sum(c.order_errors for c in slow), slow_latencies.tobytes(), resumed,
        [c.close_code for c in slow],
    ))


def clients_main(
    port: int | list[int], path: str, n: int, m: int, conn: Connection, slow: int = 0
) -> None:
    pin_to(1)
    raise_fd_limit()
    asyncio.run(_clients(port, path, n, m, conn, slow))


# -- the runs -------------------------------------------------------------------------


@dataclass
class Result:
    rate: float
    p50_ms: float
    p99_ms: float
    delivered: int
    expected: int
    order_errors: int
    # The server process's CPU time (all threads) per delivered message, publish to
    # last receive: steadier than msgs/s on a shared machine (others' load slows
    # every server alike but does not add to its CPU time).
    cpu_us: float = 0.0
    shed: int = 0  # --slow: slow clients Chimera closed as too far behind (4008)

    @staticmethod
    def measured(
        raw: bytes, received: int, started: float, last: float, expected: int,
        order_errors: int, cpu_us: float = 0.0,
    ) -> Result:
        """A run's figures from the clients' report (``raw``: their latencies, packed)."""
        latencies = array("d")
        latencies.frombytes(raw)
        cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
        return Result(
            rate=received / max(last - started, 1e-9),
            p50_ms=cuts[49] * 1000, p99_ms=cuts[98] * 1000,
            delivered=received, expected=expected, order_errors=order_errors, cpu_us=cpu_us,
        )


def _expect(
    conn: Connection, kind: str, timeout: float = 600.0, peer: Any = None
) -> tuple[Any, ...]:
    """The next message, which must be ``kind``; fails within a second of ``peer``
    (the process that should send it) exiting instead of waiting out ``timeout``."""
    deadline = time.monotonic() + timeout
    while not conn.poll(1.0):
        if peer is not None and not peer.is_alive() and not conn.poll(0):
            raise RuntimeError(f"no {kind!r} message: the process exited ({peer.exitcode})")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {kind!r} message")
    message: tuple[Any, ...] = conn.recv()
    if message[0] != kind:
        raise RuntimeError(f"expected {kind!r}, got {message[0]!r}")
    return message


def start_server(
    ctx: Any, kind: str, db: str, tree: str = ""
) -> tuple[Any, Connection, int, int]:
    ours, theirs = ctx.Pipe()
    process = ctx.Process(target=server_main, args=(kind, theirs, db, tree))
    process.start()
    _, port, rss = _expect(ours, "port")
    return process, ours, port, rss


def path_for(kind: str) -> str:
    return f"/ws/orchestrate/{JOB_ID}" if kind.startswith("chimera") else "/"


def stop_all(control: Connection, clients: Any, server: Any) -> None:
    """Lets the clients finish, stops the server, kills what is still running."""
    clients.join(60)
    control.send(("stop",))
    server.join(60)
    for process in (clients, server):
        if process.is_alive():
            process.kill()


@contextlib.contextmanager
def _publishing(
    ctx: Any, kind: str, n: int, m: int, tmp: str, tree: str = "", slow: int = 0
) -> Iterator[tuple[Connection, Connection, float]]:
    """A server and its N clients, the server publishing M events: the clients'
    pipe, the server's and when publishing started. Stops them all at the end."""
    db = f"{tmp}/{kind}-{n}-{time.monotonic_ns()}.db"  # a fresh log for every run
    server, control, port, _ = start_server(ctx, kind, db, tree)
    ours, theirs = ctx.Pipe()
    clients = ctx.Process(target=clients_main, args=(port, path_for(kind), n, m, theirs, slow))
    clients.start()
    try:
        _expect(ours, "ready", 600, clients)
        control.send(("publish", m))
        _, started = _expect(control, "started")
        yield ours, control, started
    finally:
        stop_all(control, clients, server)


def _cpu(control: Connection) -> float:
    """The server's CPU seconds since it started publishing."""
    control.send(("cpu",))
    seconds: float = _expect(control, "cpu")[1]
    return seconds


def run_fanout(ctx: Any, kind: str, n: int, m: int, tmp: str, tree: str = "") -> Result:
    with _publishing(ctx, kind, n, m, tmp, tree) as (ours, control, started):
        _, received, last, order_errors, raw = _expect(ours, "result")
        cpu_seconds = _cpu(control)
    return Result.measured(
        raw, received, started, last, n * m, order_errors,
        cpu_us=cpu_seconds * 1e6 / max(received, 1),
    )


def run_slow(
    ctx: Any, kind: str, n: int, k: int, m: int, tmp: str, tree: str = ""
) -> tuple[Result, Result]:
    """--slow: N clients, the first K of which read nothing until the other N - K
    have every event, then read their backlog. The fast ones' figures (CPU: the
    server's, publish to then, per fast delivery) and the slow ones' (rate and
    CPU from the moment they resume to their last event)."""
    with _publishing(ctx, kind, n, m, tmp, tree, k) as (ours, control, started):
        _, fast_received, fast_last, fast_errors, fast_raw = _expect(ours, "fast")
        cpu_fast = _cpu(control)
        ours.send(("resume",))
        _, received, last, errors, raw, resumed, close_codes = _expect(ours, "slow")
        cpu_all = _cpu(control)
    fast = Result.measured(
        fast_raw, fast_received, started, fast_last, (n - k) * m, fast_errors,
        cpu_us=cpu_fast * 1e6 / max(fast_received, 1),
    )
    slow = Result.measured(
        raw, received, resumed, last, k * m, errors,
        cpu_us=(cpu_all - cpu_fast) * 1e6 / max(received, 1),
    )
    # Imported here, not at the top: a --tree server must import its own chimera.
    from chimera.errors import CLOSE_TOO_SLOW

    slow.shed = close_codes.count(CLOSE_TOO_SLOW)
    return fast, slow


def main_slow(
    args: argparse.Namespace, chimeras: list[str], tree_of: dict[str, str]
) -> int:
    """--slow K: fast and slow subscribers of one job, and the fast ones alone."""
    k = args.slow
    sizes = args.n or [100]
    ctx = mp.get_context("spawn")
    print(f"slow subscribers: {args.m} events of ~400 B per run, median of {args.repeat} "
          f"runs, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print(f"of N subscribers, {k} ('slow') read nothing until the others ('fast') have "
          "every event, then read their backlog; 'alone': the fast ones without them")
    kinds = ["bare", *chimeras]
    width = max(10, *(len(kind) for kind in kinds))
    print(f"{'N':>6} {'server':<{width}} {'clients':<10} {'msgs/s':>10} {'p50 ms':>8} "
          f"{'p99 ms':>8} {'delivered':>15} {'order errs':>10} {'shed':>5} {'CPU us/msg':>10}")
    with tempfile.TemporaryDirectory(prefix="chimera-bench-") as tmp:
        for n in sizes:
            groups = [f"fast {n - k}", f"slow {k}", f"alone {n - k}"]
            runs: dict[tuple[str, str], list[Result]] = {
                (kind, group): [] for kind in kinds for group in groups
            }
            for _ in range(args.repeat):  # alternating, so load from others hits each alike
                for kind in kinds:
                    tree = tree_of.get(kind, "")
                    fast, slow = run_slow(ctx, kind, n, k, args.m, tmp, tree)
                    alone = run_fanout(ctx, kind, n - k, args.m, tmp, tree)
                    for group, result in zip(groups, (fast, slow, alone), strict=True):
                        runs[kind, group].append(result)
            rates: dict[tuple[str, str], float] = {}
            cpus: dict[tuple[str, str], float] = {}
            for kind in kinds:
                for group in groups:
                    results = sorted(runs[kind, group], key=lambda r: r.rate)
                    r = results[len(results) // 2]
                    rates[kind, group] = r.rate
                    cpus[kind, group] = statistics.median(x.cpu_us for x in results)
                    errors = sum(x.order_errors for x in results)
                    shed = sum(x.shed for x in results)
                    # A slow client's latency is mostly its own pause: not shown.
                    latency = f"{'':>8} {'':>8}" if group.startswith("slow") else \
                        f"{r.p50_ms:>8.1f} {r.p99_ms:>8.1f}"
                    print(f"{n:>6} {kind:<{width}} {group:<10} {r.rate:>10,.0f} {latency} "
                          f"{r.delivered:>7}/{r.expected:<7} {errors:>10} {shed:>5} "
                          f"{cpus[kind, group]:>10.2f}", flush=True)
            for kind in chimeras:  # Chimera / bare; CPU: bare / Chimera (100%: as cheap)
                label = "ratio" + kind.removeprefix("chimera")
                for group in groups:
                    print(f"{n:>6} {label:<{width}} {group:<10} "
                          f"{rates[kind, group] / rates['bare', group]:>10.0%} {'':>17} "
                          f"{'':>15} {'':>10} {'':>5} "
                          f"{cpus['bare', group] / cpus[kind, group]:>10.0%}", flush=True)
            with_slow, by_themselves = groups[0], groups[2]
            for kind in kinds:  # 100%: the slow ones cost the fast ones nothing
                print(f"{n:>6} {'fast/alone':<{width}} {kind:<10} "
                      f"{rates[kind, with_slow] / rates[kind, by_themselves]:>10.0%} {'':>17} "
                      f"{'':>15} {'':>10} {'':>5} "
                      f"{cpus[kind, by_themselves] / cpus[kind, with_slow]:>10.0%}", flush=True)
    return 0


def run_scaled(
    ctx: Any, stores: list[str], n: int, m: int, rate: float, tree: str = "",
    kind: str = "chimera",
) -> Result:
    """One Chimera server process per entry of ``stores`` (a SQLite file or a Redis
    URL); N clients spread over them; the job runs in the first, publishing
    ``rate`` events/s (0: as fast as the pipeline takes them). ``kind`` "bare": the
    bare server instead (one store, its path unused)."""
    for url in {store for store in stores if store.startswith("redis://")}:
        import redis

        with redis.Redis.from_url(url) as client:  # a fresh data set for every run
            client.flushall()
    servers = [start_server(ctx, kind, store, tree) for store in stores]
    ports = [port for _, _, port, _ in servers]
    ours, theirs = ctx.Pipe()
    clients = ctx.Process(target=clients_main, args=(ports, path_for(kind), n, m, theirs))
    clients.start()
    control = servers[0][1]
    try:
        _expect(ours, "ready", 600, clients)
        control.send(("publish", m, rate))
        _, started = _expect(control, "started")
        _, received, last, order_errors, raw = _expect(ours, "result")
    finally:
        clients.join(60)
        for process, conn, _, _ in servers:
            conn.send(("stop",))
            process.join(60)
        for process in (clients, *(p for p, _, _, _ in servers)):
            if process.is_alive():
                process.kill()
    return Result.measured(raw, received, started, last, n * m, order_errors)


def start_redis(directory: str) -> tuple[Any, str]:
    """A redis-server on a free port in ``directory`` (append-only file on)."""
    import subprocess

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", directory,
         "--appendonly", "yes", "--save", ""],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return process, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.025)
    process.kill()
    raise RuntimeError("redis-server did not start")


def _median_runs(
    ctx: Any, stores: Callable[[], list[str]], n: int, m: int, rate: float, repeat: int,
    trees: dict[str, str],
) -> dict[str, tuple[Result, int]]:
    """Per tree, the median of ``repeat`` runs (by throughput at saturation, by p99
    when paced) and the order errors of them all; the trees' runs interleaved."""
    runs: dict[str, list[Result]] = {label: [] for label in trees}
    for _ in range(repeat):
        for label, tree in trees.items():
            runs[label].append(run_scaled(ctx, stores(), n, m, rate, tree))
    medians = {}
    for label, results in runs.items():
        ranked = sorted(results, key=lambda r: r.rate if rate == 0 else r.p99_ms)
        medians[label] = (ranked[len(ranked) // 2], sum(r.order_errors for r in results))
    return medians


def main_redis(args: argparse.Namespace, trees: dict[str, str]) -> int:
    """SQLite vs Redis vs two processes on Redis, same run (see the module docstring);
    with ``--tree``, each setup also with the other checkouts' Chimera, interleaved."""
    import subprocess

    sizes = args.n or [100, 1000]
    ctx = mp.get_context("spawn")
    print(f"scale-out: {args.m} events of ~400 B per run, median of {args.repeat} runs, "
          f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}; fixed rate "
          f"{args.rate:g} events/s for latency")
    width = 16 + max(len(label) for label in trees)
    print(f"{'N':>6} {'setup':<{width}} {'msgs/s':>10} {'ratio':>6} {'p50 ms':>8} "
          f"{'p99 ms':>8} {'delivered':>11} {'order errs':>10}")
    with tempfile.TemporaryDirectory(prefix="chimera-bench-") as tmp:
        redis, url = start_redis(tmp)
        try:
            for n in sizes:
                setups: dict[str, Callable[[], list[str]]] = {
                    "1 proc sqlite": lambda: [f"{tmp}/{time.monotonic_ns()}.db"],
                    "1 proc redis": lambda: [url],
                    "2 procs redis": lambda: [url, url],
                }
                anchor = 0.0
                for name, stores in setups.items():
                    saturated = _median_runs(ctx, stores, n, args.m, 0, args.repeat, trees)
                    paced = _median_runs(
                        ctx, stores, n, max(int(args.rate * PACED_SECONDS), 1), args.rate,
                        args.repeat, trees,
                    )
                    for label in trees:
                        (fast, errors), (slow, more) = saturated[label], paced[label]
                        anchor = anchor or fast.rate  # this tree's 1 proc sqlite
                        print(f"{n:>6} {name + label:<{width}} {fast.rate:>10,.0f} "
                              f"{fast.rate / anchor:>6.0%} {slow.p50_ms:>8.1f} "
                              f"{slow.p99_ms:>8.1f} {fast.delivered:>5}/{fast.expected:<5} "
                              f"{errors + more:>10}", flush=True)
        finally:
            redis.terminate()
            try:
                redis.wait(10)
            except subprocess.TimeoutExpired:
                redis.kill()
    return 0


def run_memory(ctx: Any, kind: str, n: int, tmp: str, tree: str = "") -> float:
    server, control, port, _ = start_server(ctx, kind, f"{tmp}/{kind}-memory.db", tree)
    control.send(("rss",))
    _, before = _expect(control, "rss")
    ours, theirs = ctx.Pipe()
    clients = ctx.Process(target=clients_main, args=(port, path_for(kind), n, 0, theirs))
    clients.start()
    try:
        _expect(ours, "ready", 180, clients)
        time.sleep(1.0)  # let the last handlers settle
        control.send(("rss",))
        _, after = _expect(control, "rss")
        ours.send(("done",))
    finally:
        stop_all(control, clients, server)
    return float(after - before) / n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, action="append", help="subscribers (repeatable)")
    parser.add_argument("-m", type=int, help="events per run (default 3000; --slow: 2000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; median kept")
    parser.add_argument("--memory", type=int, default=10_000, help="idle subscribers; 0 = skip")
    parser.add_argument("--redis", action="store_true",
                        help="SQLite vs Redis vs two processes on Redis (needs redis-server)")
    parser.add_argument("--rate", type=float, default=20.0,
                        help="with --redis: events/s of the latency runs, well below "
                        "saturation (default 20; each run lasts 5 s)")
    parser.add_argument("--metrics", action="store_true",
                        help="also run Chimera with metrics on (chimera+m), alternating")
    parser.add_argument("--slow", type=int, default=0, metavar="K",
                        help="K of the N subscribers read nothing until the others have "
                        "every event, then catch up (default N: 100)")
    parser.add_argument("--tree", action="append", default=[], metavar="LABEL=DIR",
                        help="also run the Chimera in checkout DIR (chimera@LABEL), "
                        "alternating (repeatable)")
    args = parser.parse_args()
    trees = {"": ""}  # kind suffix -> checkout ("": this one)
    for spec in args.tree:
        label, _, directory = spec.partition("=")
        checkout = Path(directory) / "chimera" / "__init__.py"
        if not label or not directory or not checkout.is_file():
            parser.error(f"--tree {spec!r}: give LABEL=DIR, DIR a checkout with chimera/")
        trees[f"@{label}"] = str(Path(directory).resolve())
    # --slow: a slow client's backlog (~400 B an event) must fit in the 1 MiB bound.
    args.m = args.m or (2000 if args.slow else 3000)
    if args.slow and (
        args.metrics or args.redis or any(not 0 < args.slow < n for n in args.n or [100])
    ):
        parser.error("--slow K: 1 to N - 1 of the N subscribers; not with --metrics or --redis")
    if args.redis:
        return main_redis(args, trees)
    chimeras = [f"chimera{suffix}" for suffix in trees]
    tree_of = {f"chimera{suffix}": directory for suffix, directory in trees.items()}
    raise_fd_limit()
    if args.slow:
        return main_slow(args, chimeras, tree_of)
    sizes = args.n or [1, 100, 1000]
    ctx = mp.get_context("spawn")
    print(f"fan-out: {args.m} events of ~400 B per run, median of {args.repeat} runs, "
          f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    width = max(8, *(len(f"chimera{suffix}") for suffix in trees))
    header = f"{'N':>6} {'server':<{width}} {'msgs/s':>10} {'p50 ms':>8} {'p99 ms':>8} " \
        f"{'delivered':>11} {'order errs':>10} {'CPU us/msg':>10}"
    print(header)
    with tempfile.TemporaryDirectory(prefix="chimera-bench-") as tmp:
        for n in sizes:
            rates: dict[str, float] = {}
            kinds = ["bare", *chimeras, *(["chimera+m"] if args.metrics else [])]
            runs: dict[str, list[Result]] = {kind: [] for kind in kinds}
            for _ in range(args.repeat):  # alternating, so load from others hits each alike
                for kind in kinds:
                    runs[kind].append(run_fanout(ctx, kind, n, args.m, tmp, tree_of.get(kind, "")))
            cpus: dict[str, float] = {}
            for kind in kinds:
                results = sorted(runs[kind], key=lambda r: r.rate)
                r = results[len(results) // 2]
                rates[kind] = r.rate
                cpus[kind] = statistics.median(x.cpu_us for x in results)
                errors = sum(x.order_errors for x in results)
                print(f"{n:>6} {kind:<{width}} {r.rate:>10,.0f} {r.p50_ms:>8.1f} "
                      f"{r.p99_ms:>8.1f} {r.delivered:>5}/{r.expected:<5} {errors:>10} "
                      f"{cpus[kind]:>10.2f}", flush=True)
            for kind in chimeras:  # CPU: bare / chimera, so 100% means as cheap as bare
                label = "ratio" + kind.removeprefix("chimera")
                print(f"{n:>6} {label:<{width}} {rates[kind] / rates['bare']:>10.0%} "
                      f"{'':>17} {'':>11} {'':>10} {cpus['bare'] / cpus[kind]:>10.0%}",
                      flush=True)
            if args.metrics:
                print(f"{n:>6} {'on/off':<{width}} {rates['chimera+m'] / rates['chimera']:>10.1%}",
                      flush=True)
        if args.memory:
            for kind in ["bare", *chimeras]:
                per = run_memory(ctx, kind, args.memory, tmp, tree_of.get(kind, ""))
                print(f"memory: {kind:<{width}} {args.memory} idle subscribers: "
                      f"{per / 1024:.1f} KiB RSS each", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
