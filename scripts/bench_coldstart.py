#!/usr/bin/env python
"""Cold start: ``chimera serve`` against grpc.aio + websockets in one process.

    .venv/bin/python scripts/bench_coldstart.py                 # N = 7 of each, interleaved
    .venv/bin/python scripts/bench_coldstart.py -n 3
    .venv/bin/python scripts/bench_coldstart.py --tree before=/tmp/cold-before  # and another tree

Each run picks free ports, starts the server as a subprocess pinned to core 0
(``chimera serve`` with a fresh temporary ``--db``, metrics on as by default,
no API keys; or ``scripts/coldstart_anchor.py``, which imports grpc.aio and
websockets and serves the gRPC health service and a greeting WebSocket), and
from core 1 polls every 5 ms until (a) a WebSocket connection gets its first
message (Chimera's ``connected`` on ``/ws/orchestrate/{id}``, the anchor's
greeting) and (b) a gRPC health Check answers SERVING. Times are wall clock
from just before the spawn. Then the server's VmRSS (/proc/PID/status) and the
CPU time its threads have run (/proc/PID/task/*/schedstat: steadier than wall
time on a loaded machine) are read and it is stopped. Servers alternate
(anchor, chimera, [trees…]) so drift on the shared machine hits all alike;
medians are printed, with the ratio to the anchor. ``--tree LABEL=DIR`` runs
DIR's ``chimera`` package (e.g. a ``git worktree`` of an older commit) with
this environment's dependencies.

Bytecode: first, each tree's ``chimera`` is compiled (``compileall``: its
``__pycache__``, ignored by git), as pip does when it installs a package and as
the anchor's grpc and websockets are. Without it, with PYTHONDONTWRITEBYTECODE=1
(as in this environment) a checkout compiles Chimera's own source (~16,000
lines) at every start, ~60 ms that no installed server pays; ``--source`` times
the trees as they are, to see that cost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parent.parent
ANCHOR = ROOT / "scripts" / "coldstart_anchor.py"
POLL = 0.005
GIVE_UP = 20.0


@dataclass
class Run:
    ws: float
    grpc: float
    rss_kib: int
    cpu: float


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _cpu_seconds(pid: int) -> float:
    """CPU time the process's threads have run so far (schedstat: ns on the CPU), which
    the other loads of a shared machine delay but hardly add to, as they do to wall time."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that has just ended
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def _first_ws(url: str, start: float) -> float:
    while time.perf_counter() - start < GIVE_UP:
        try:
            async with connect(url, open_timeout=2) as ws:
                await asyncio.wait_for(ws.recv(), 2)
                return time.perf_counter() - start
        except (TimeoutError, OSError):
            await asyncio.sleep(POLL)
    raise RuntimeError(f"no WebSocket answer from {url}")


async def _first_grpc(port: int, start: float) -> float:
    request = health_pb2.HealthCheckRequest()
    while time.perf_counter() - start < GIVE_UP:
        # A fresh channel per try: a channel's own reconnect backoff (1 s) would
        # measure grpc's client, not the server.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(request, timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return time.perf_counter() - start
            except grpc.aio.AioRpcError as e:
                if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise
        await asyncio.sleep(POLL)
    raise RuntimeError(f"no gRPC answer on port {port}")


def _pin_core0() -> None:
    os.sched_setaffinity(0, {0})


def _spawn(argv: list[str], cwd: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, cwd=cwd, env=env, preexec_fn=_pin_core0,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def _one(kind: str, tree: Path | None) -> Run:
    grpc_port, ws_port, metrics_port = _free_ports(3)
    with tempfile.TemporaryDirectory() as tmp:
        if kind == "anchor":
            argv = [sys.executable, str(ANCHOR), str(grpc_port), str(ws_port)]
            url = f"ws://127.0.0.1:{ws_port}/"
            cwd = str(ROOT)
        else:
            argv = [sys.executable, "-m", "chimera", "serve",
                    "--grpc-port", str(grpc_port), "--ws-port", str(ws_port),
                    "--metrics-port", str(metrics_port), "--db", f"{tmp}/c.db"]
            url = f"ws://127.0.0.1:{ws_port}/ws/orchestrate/coldstart"
            # ``-m`` puts the working directory first on sys.path: its chimera runs.
            cwd = str(tree or ROOT)
        env = {k: v for k, v in os.environ.items()
               if not k.endswith("_API_KEY") and not k.startswith("CHIMERA_")}
        start = time.perf_counter()
        proc = _spawn(argv, cwd, env)
        try:
            ws_t, grpc_t = await asyncio.gather(_first_ws(url, start),
                                                _first_grpc(grpc_port, start))
            rss = _rss_kib(proc.pid)
            cpu = _cpu_seconds(proc.pid)
        except BaseException:
            proc.kill()
            err = proc.stderr.read().decode() if proc.stderr else ""
            sys.stderr.write(err[-3000:])
            raise
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return Run(ws_t, grpc_t, rss, cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=7, help="starts of each server (default 7)")
    parser.add_argument("--tree", action="append", default=[], metavar="LABEL=DIR",
                        help="also time DIR's chimera package (repeatable)")
    parser.add_argument("--source", action="store_true",
                        help="do not compile the trees' bytecode first (see above)")
    args = parser.parse_args()
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {1})
    servers: list[tuple[str, str, Path | None]] = [("anchor", "anchor", None),
                                                   ("chimera", "chimera", None)]
    for spec in args.tree:
        label, _, path = spec.partition("=")
        servers.append((f"chimera@{label}", "chimera", Path(path).resolve()))
    runs: dict[str, list[Run]] = {label: [] for label, _, _ in servers}
    if not args.source:
        for _, _, tree in servers[1:]:
            subprocess.run([sys.executable, "-m", "compileall", "-q",
                            str((tree or ROOT) / "chimera")], check=True)

    async def go() -> None:
        for _, kind, tree in servers:  # warm-up: page cache, the prober's own grpc
            await _one(kind, tree)
        for _ in range(args.n):
            for label, kind, tree in servers:
                runs[label].append(await _one(kind, tree))

    asyncio.run(go())
    anchor_both = statistics.median(max(r.ws, r.grpc) for r in runs["anchor"])
    anchor_rss = statistics.median(r.rss_kib for r in runs["anchor"])
    anchor_cpu = statistics.median(r.cpu for r in runs["anchor"])
    bytecode = "as found" if args.source else "compiled first"
    print(f"cold start, median of {args.n} (server on core 0, prober on core 1; "
          f"chimera's bytecode {bytecode})")
    print(f"{'server':<18}{'ws answer':>11}{'grpc answer':>13}{'both':>8}{'ratio':>8}"
          f"{'RSS MB':>9}{'ratio':>7}{'CPU':>8}{'ratio':>7}")
    for label, _, _ in servers:
        rs = runs[label]
        ws = statistics.median(r.ws for r in rs)
        gr = statistics.median(r.grpc for r in rs)
        both = statistics.median(max(r.ws, r.grpc) for r in rs)
        rss = statistics.median(r.rss_kib for r in rs)
        cpu = statistics.median(r.cpu for r in rs)
        print(f"{label:<18}{ws:>10.3f}s{gr:>12.3f}s{both:>7.3f}s{both / anchor_both:>7.2f}x"
              f"{rss / 1024:>9.1f}{rss / anchor_rss:>6.2f}x{cpu:>7.3f}s{cpu / anchor_cpu:>6.2f}x")


if __name__ == "__main__":
    main()
