"""The ``chimera`` command: serve, submit, status, jobs, cancel, watch, demo.

Exit codes: 0 success (for ``submit``/``demo``: the job succeeded); 1 the job
did not succeed; 2 bad usage or the server refused the request; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import grpc
from rich.console import Console
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI

from chimera.actors.broadcaster import DEFAULT_SUBSCRIBER_MAX_BYTES
from chimera.client import JobsClient
from chimera.config import DEFAULT_DB, DEFAULT_GRPC_PORT, DEFAULT_WS_PORT, ServerConfig
from chimera.console import render_code, render_event, render_job, render_jobs
from chimera.events import TeamName
from chimera.gateways.convert import TEAM_TO_PB
from chimera.ids import is_valid_job_id
from chimera.providers.simulated import DEFAULT_DELAY
from chimera.server import ChimeraServer
from chimera.v1 import jobs_pb2 as pb

DEFAULT_SERVER = f"127.0.0.1:{DEFAULT_GRPC_PORT}"
MIN_SUBSCRIBER_MAX_BYTES = 64 * 1024
DEFAULT_BRIEF = "Create a login form with email and password"

log = logging.getLogger("chimera")


def _team(value: str) -> TeamName:
    try:
        return TeamName(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"unknown team {value!r}: use {', '.join(t.value for t in TeamName)}"
        ) from None


def _non_negative(value: str) -> float:
    number = float(value)
    if number < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return number


def _queue_bytes(value: str) -> int:
    number = int(value)
    if number < MIN_SUBSCRIBER_MAX_BYTES:
        # Smaller than one code event: every subscriber would be shed.
        raise argparse.ArgumentTypeError(f"must be at least {MIN_SUBSCRIBER_MAX_BYTES}")
    return number


def _add_server_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--grpc-port", type=int, default=DEFAULT_GRPC_PORT)
    p.add_argument("--ws-port", type=int, default=DEFAULT_WS_PORT)
    p.add_argument("--db", default=DEFAULT_DB, help="SQLite file, or :memory: (default chimera.db)")
    p.add_argument(
        "--sim-delay", type=_non_negative, default=DEFAULT_DELAY, metavar="SECONDS",
        help=f"simulated teams: pause between steps (default {DEFAULT_DELAY}; 0 = no pause)",
    )
    p.add_argument(
        "--sim-fail", type=_team, action="append", default=[], metavar="TEAM",
        help="make this simulated team fail after thinking (repeatable)",
    )
    p.add_argument(
        "--job-deadline", type=_non_negative, default=600.0, metavar="SECONDS",
        help="stop a job still running after this long (default 600)",
    )
    p.add_argument(
        "--retention", type=_non_negative, default=0.0, metavar="SECONDS",
        help="remove finished jobs and their events this long after they end "
        "(default 0 = keep everything)",
    )
    p.add_argument(
        "--subscriber-max-bytes", type=_queue_bytes, default=DEFAULT_SUBSCRIBER_MAX_BYTES,
        metavar="BYTES",
        help="shed a subscriber (close 4008) whose unsent events pass this many bytes "
        f"(default {DEFAULT_SUBSCRIBER_MAX_BYTES})",
    )


def _config(args: argparse.Namespace, **override: object) -> ServerConfig:
    values: dict[str, object] = {
        "host": args.host,
        "grpc_port": args.grpc_port,
        "ws_port": args.ws_port,
        "db": args.db,
        "sim_delay": args.sim_delay,
        "sim_fail": frozenset(args.sim_fail),
        "job_deadline": args.job_deadline or 600.0,
        "retention": args.retention or None,
        "subscriber_max_bytes": args.subscriber_max_bytes,
    }
    values.update(override)
    return ServerConfig(**values)  # type: ignore[arg-type]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chimera", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the server (gRPC + WebSocket)")
    _add_server_flags(p)

    p = sub.add_parser("submit", help="submit a brief and watch both teams live")
    p.add_argument("brief")
    p.add_argument("--server", default=DEFAULT_SERVER, help=f"gRPC address ({DEFAULT_SERVER})")
    p.add_argument("--team", type=_team, action="append", default=[], help="only this team")
    p.add_argument("--job-id", default="", help="choose the job id")
    p.add_argument("--request-id", default="", help="idempotency key")

    for name, text in (("status", "show a job"), ("cancel", "cancel a running job")):
        p = sub.add_parser(name, help=text)
        p.add_argument("job_id")
        p.add_argument("--server", default=DEFAULT_SERVER)
        p.add_argument("--json", action="store_true", help="print the job as JSON")

    p = sub.add_parser("jobs", help="list jobs, newest first")
    p.add_argument("--server", default=DEFAULT_SERVER)
    p.add_argument("--limit", type=int, default=20)

    p = sub.add_parser("watch", help="print a job's WebSocket messages as JSON lines")
    p.add_argument("job_id")
    p.add_argument("--ws", default=f"ws://127.0.0.1:{DEFAULT_WS_PORT}", help="WebSocket base URL")
    p.add_argument("--since", type=int, default=0, help="only events after this seq")

    p = sub.add_parser("demo", help="one process: start a server, run a brief end to end")
    p.add_argument("brief", nargs="?", default=DEFAULT_BRIEF)
    _add_server_flags(p)
    p.set_defaults(grpc_port=0, ws_port=0, db="")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    command = {
        "serve": _serve,
        "submit": _submit,
        "status": _status,
        "cancel": _cancel,
        "jobs": _jobs,
        "watch": _watch,
        "demo": _demo,
    }[args.command]
    try:
        return asyncio.run(command(args))
    except KeyboardInterrupt:
        return 130
    except grpc.aio.AioRpcError as exc:
        Console(stderr=True).print(f"[red]error:[/] {exc.code().name}: {exc.details()}")
        return 2


async def _serve(args: argparse.Namespace) -> int:
    server = ChimeraServer(_config(args))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, server.stop)
    for team in TeamName:
        log.info("team %s: simulated provider (no API key set)", team.value)
    await server.serve()
    return 0


async def _follow(client: JobsClient, job_id: str, console: Console) -> pb.Job:
    async for event in client.events(job_id):
        render_event(console, event)
    return await client.get(job_id)


async def _submit(args: argparse.Namespace) -> int:
    console = Console()
    async with JobsClient(args.server) as client:
        job = await client.create(
            args.brief, [TEAM_TO_PB[t] for t in args.team], args.job_id, args.request_id
        )
        console.print(f"[bold]job {job.job_id}[/] submitted: {job.brief}")
        job = await _follow(client, job.job_id, console)
    render_code(console, job)
    render_job(console, job)
    return 0 if job.state == pb.JOB_STATE_SUCCEEDED else 1


async def _status(args: argparse.Namespace) -> int:
    async with JobsClient(args.server) as client:
        job = await client.get(args.job_id)
    _show(job, args.json)
    return 0


async def _cancel(args: argparse.Namespace) -> int:
    async with JobsClient(args.server) as client:
        job = await client.cancel(args.job_id)
    _show(job, args.json)
    return 0


def _show(job: pb.Job, as_json: bool) -> None:
    if as_json:
        from google.protobuf.json_format import MessageToJson

        print(MessageToJson(job))
    else:
        render_job(Console(), job)


async def _jobs(args: argparse.Namespace) -> int:
    async with JobsClient(args.server) as client:
        response = await client.list(page_size=max(1, min(args.limit, 100)))
    render_jobs(Console(), list(response.jobs))
    return 0


async def _watch(args: argparse.Namespace) -> int:
    errors = Console(stderr=True)
    if not is_valid_job_id(args.job_id):
        errors.print(f"[red]error:[/] malformed job id {args.job_id!r}")
        return 2
    url = f"{args.ws.rstrip('/')}/ws/orchestrate/{args.job_id}?since={args.since}"
    try:
        async with connect(url) as ws:
            with contextlib.suppress(ConnectionClosed):
                async for message in ws:
                    text = message if isinstance(message, str) else message.decode()
                    print(json.dumps(json.loads(text), ensure_ascii=False), flush=True)
            code = ws.close_code
    except InvalidStatus as exc:
        body = exc.response.body.decode(errors="replace").strip() if exc.response.body else ""
        errors.print(f"[red]refused:[/] HTTP {exc.response.status_code} {body}")
        return 2
    except (OSError, InvalidURI) as exc:
        errors.print(f"[red]cannot connect to {url}:[/] {exc}")
        return 2
    return 0 if code in (1000, None) else 1


async def _demo(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="chimera-demo-") as tmp:
        db = args.db or str(Path(tmp) / "chimera.db")
        server = ChimeraServer(_config(args, db=db))
        console = Console()
        async with asyncio.TaskGroup() as tg:
            serving = tg.create_task(server.serve())
            await server.ready.wait()
            console.print(
                f"[dim]demo server: gRPC 127.0.0.1:{server.grpc_port}, "
                f"WebSocket ws://127.0.0.1:{server.ws_port}/ws/orchestrate/{{job_id}}[/]"
            )
            try:
                async with JobsClient(f"127.0.0.1:{server.grpc_port}") as client:
                    job = await client.create(args.brief)
                    console.print(f"[bold]job {job.job_id}[/] submitted: {job.brief}")
                    job = await _follow(client, job.job_id, console)
            finally:
                server.stop()
            await serving
    render_code(console, job)
    render_job(console, job)
    return 0 if job.state == pb.JOB_STATE_SUCCEEDED else 1
