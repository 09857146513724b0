"""The ``chimera`` command: serve, submit, status, jobs, cancel, watch, token, demo.

Exit codes: 0 success (for ``submit``/``demo``: the job succeeded); 1 the job
did not succeed; 2 bad usage or the server refused the request; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import ssl
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlencode

import grpc
from rich.console import Console
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI

from chimera import __version__, eventloop
from chimera.auth.principal import parse_scopes
from chimera.auth.redact import redacting_logger
from chimera.auth.tokens import (
    DEFAULT_AUDIENCE,
    DEFAULT_ISSUER,
    DEFAULT_TTL,
    check_secret,
    mint,
)
from chimera.client import JobsClient
from chimera.cluster.workers import supervise
from chimera.config import DEFAULT_DB, DEFAULT_GRPC_PORT, DEFAULT_WS_PORT, ServerConfig
from chimera.console import LiveView, render_code, render_job, render_jobs
from chimera.defaults import (
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_MAX_JOBS_PER_CALLER,
    DEFAULT_MAX_SUBSCRIBERS_PER_ADDRESS,
    DEFAULT_MAX_SUBSCRIBERS_PER_JOB,
    DEFAULT_METRICS_PORT,
    DEFAULT_SIM_DELAY,
    DEFAULT_SUBSCRIBER_MAX_BYTES,
    MAX_BRIEF_CHARS,
    MAX_CLIENT_FRAME,
    MAX_MESSAGE_BYTES,
)
from chimera.errors import ConfigError
from chimera.events import TeamName
from chimera.fakes.briefed import fake_apis
from chimera.ids import is_valid_job_id
from chimera.observability import logs
from chimera.providers.registry import Mode, Providers, ProviderSettings
from chimera.providers.table import PROVIDERS
from chimera.server import ChimeraServer
from chimera.v1 import jobs_pb2 as pb
from chimera.wire import TEAM_TO_PB

DEFAULT_SERVER = f"127.0.0.1:{DEFAULT_GRPC_PORT}"
DEFAULT_WEB_URL = f"http://127.0.0.1:{DEFAULT_WS_PORT}"
MIN_SUBSCRIBER_MAX_BYTES = 64 * 1024
DEFAULT_BRIEF = "Create a login form with email and password"
SECRET_ENV = "CHIMERA_JWT_SECRET"
TOKEN_ENV = "CHIMERA_TOKEN"
REDIS_ENV = "CHIMERA_REDIS_URL"

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


def _team_modes(value: str) -> dict[TeamName, Mode]:
    modes = {}
    for item in value.split(","):
        team, sep, mode = item.strip().partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(
                f"{item!r} is not TEAM=MODE, e.g. anthropic=real,google=simulated"
            )
        try:
            modes[_team(team)] = Mode(mode)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"unknown mode {mode!r}: use {', '.join(m.value for m in Mode)}"
            ) from None
    return modes


def _add_provider_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "teams",
        "A team runs its real provider when its key is set (ANTHROPIC_API_KEY; "
        "GOOGLE_API_KEY or GEMINI_API_KEY), the simulated one otherwise. Base URLs also "
        "follow ANTHROPIC_BASE_URL and GOOGLE_GEMINI_BASE_URL when the flags are not given.",
    )
    g.add_argument(
        "--teams", type=_team_modes, default={}, metavar="TEAM=MODE[,…]",
        help="auto (default), real (refuse to start without the key) or simulated per team",
    )
    for spec in PROVIDERS:
        for setting in spec.settings:
            default: str | int | None = None
            if setting.from_env:
                default = _from_env(spec.env_name(setting), setting.kind)
            g.add_argument(
                spec.flag(setting), type=setting.kind, default=default, help=setting.help
            )


def _from_env(name: str, kind: type[str] | type[int]) -> str | int | None:
    value = os.environ.get(name)
    if kind is int:
        value = (value or "").strip()
        return int(value) if value.isdigit() else None
    return value


def _provider_settings(args: argparse.Namespace) -> ProviderSettings:
    """The teams' flags, by the provider table (``--anthropic-model`` → ``model``)."""
    return ProviderSettings(
        modes=args.teams,
        options={
            spec.team: {
                setting.name: getattr(args, spec.flag(setting)[2:].replace("-", "_"))
                for setting in spec.settings
            }
            for spec in PROVIDERS
        },
    )


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return number


def _add_security_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("authentication and transport")
    g.add_argument(
        "--jwt-secret", default=os.environ.get(SECRET_ENV, ""), metavar="SECRET",
        help=f"HS256 secret (32+ bytes) for tokens; default ${SECRET_ENV}; turns auth on",
    )
    g.add_argument(
        "--jwt-public-key", default="", metavar="PATH",
        help="PEM public key (RSA → RS256, P-256 → ES256) for tokens; turns auth on",
    )
    g.add_argument("--jwt-audience", default=DEFAULT_AUDIENCE, help="required aud claim")
    g.add_argument("--jwt-issuer", default=DEFAULT_ISSUER, help="required iss claim")
    g.add_argument(
        "--insecure", action="store_true",
        help="allow serving a non-loopback address without authentication",
    )
    g.add_argument(
        "--allowed-origin", action="append", default=[], metavar="ORIGIN",
        help="browser Origin allowed on the WebSocket besides the server's own "
        "(e.g. https://app.example.com; '*' = any); repeatable",
    )
    g.add_argument(
        "--allowed-host", action="append", default=[], metavar="NAME",
        help="Host name the HTTP/WebSocket port answers to besides the bound address "
        "(and localhost on loopback); others get 421 (DNS rebinding guard); '*' = any; "
        "repeatable",
    )
    g.add_argument("--tls-cert", default="", metavar="PATH", help="PEM certificate chain")
    g.add_argument("--tls-key", default="", metavar="PATH", help="PEM private key")
    g = p.add_argument_group("limits")
    for flag, default, text in (
        ("--max-brief-chars", MAX_BRIEF_CHARS, "characters in a brief"),
        ("--max-request-bytes", MAX_MESSAGE_BYTES, "bytes in one gRPC request"),
        ("--max-frame-bytes", MAX_CLIENT_FRAME, "bytes in one WebSocket client frame"),
        ("--max-subscribers-per-job", DEFAULT_MAX_SUBSCRIBERS_PER_JOB, "subscribers of a job"),
        ("--max-subscribers-per-address", DEFAULT_MAX_SUBSCRIBERS_PER_ADDRESS,
         "subscribers from one client address"),
        ("--max-jobs-per-caller", DEFAULT_MAX_JOBS_PER_CALLER,
         "running jobs per token sub (per address without auth)"),
    ):
        g.add_argument(flag, type=_positive, default=default, metavar="N",
                       help=f"{text} (default {default})")


def _add_client_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--token", default=os.environ.get(TOKEN_ENV), help=f"bearer token (default ${TOKEN_ENV})"
    )
    p.add_argument("--tls-ca", default=None, metavar="PATH",
                   help="PEM certificate to trust: connect with TLS")


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
        "--redis", default=os.environ.get(REDIS_ENV, ""), metavar="URL",
        help="share jobs, events and fan-out with other processes through Redis "
        f"(redis://HOST:PORT/DB, rediss:// for TLS; default ${REDIS_ENV}); replaces --db",
    )
    p.add_argument(
        "--redis-write-timeout", type=_non_negative, default=10.0, metavar="SECONDS",
        help="with --redis: stop a job whose events Redis has not taken for this long "
        "(default 10)",
    )
    p.add_argument(
        "--drain-timeout", type=_non_negative, default=DEFAULT_DRAIN_TIMEOUT, metavar="SECONDS",
        help="on SIGTERM or SIGINT, wait this long for the running jobs to end before "
        f"interrupting those left (default {DEFAULT_DRAIN_TIMEOUT:g}; a second signal "
        "stops at once)",
    )
    p.add_argument(
        "--sim-delay", type=_non_negative, default=DEFAULT_SIM_DELAY, metavar="SECONDS",
        help=f"simulated teams: pause between steps (default {DEFAULT_SIM_DELAY}; 0 = no pause)",
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
    p.add_argument(
        "--log-format", choices=logs.FORMATS, default=None,
        help="text, or json (one object per line); default text on a terminal, json otherwise",
    )
    p.add_argument(
        "--loop", choices=eventloop.LOOPS, default=os.environ.get(eventloop.LOOP_ENV, "auto"),
        help="the event loop: uvloop, asyncio, or auto (uvloop when installed; default "
        f"${eventloop.LOOP_ENV}, else auto)",
    )


def _port(value: str) -> int:
    number = int(value)
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError("must be a port number, 0 to 65535 (0 = any free port)")
    return number


def _add_metrics_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("metrics", "Prometheus metrics at http://HOST:PORT/metrics")
    g.add_argument(
        "--metrics-port", type=_port, default=None, metavar="PORT",
        help=f"port of the metrics listener (default {DEFAULT_METRICS_PORT}; if that one is "
        "taken the server runs without metrics and says so)",
    )
    g.add_argument("--metrics-host", default="127.0.0.1",
                   help="address of the metrics listener (default 127.0.0.1)")
    g.add_argument("--no-metrics", action="store_true", help="no metrics listener")


def _config(args: argparse.Namespace, **override: object) -> ServerConfig:
    values: dict[str, object] = {
        "host": args.host,
        "grpc_port": args.grpc_port,
        "ws_port": args.ws_port,
        "db": args.db,
        "redis_url": args.redis,
        "redis_write_timeout": args.redis_write_timeout,
        "drain_timeout": args.drain_timeout,
        "reuse_port": getattr(args, "reuse_port", False),
        "sim_delay": args.sim_delay,
        "sim_fail": frozenset(args.sim_fail),
        "job_deadline": args.job_deadline or 600.0,
        "providers": _provider_settings(args),
        "retention": args.retention or None,
        "subscriber_max_bytes": args.subscriber_max_bytes,
    }
    if hasattr(args, "no_metrics") and not args.no_metrics:
        values.update(
            metrics_port=DEFAULT_METRICS_PORT if args.metrics_port is None else args.metrics_port,
            metrics_port_default=args.metrics_port is None,
            metrics_host=args.metrics_host,
        )
    if hasattr(args, "jwt_secret"):
        public_key = ""
        if args.jwt_public_key:
            try:
                public_key = Path(args.jwt_public_key).read_text()
            except OSError as exc:
                raise ConfigError(f"cannot read --jwt-public-key: {exc}") from exc
        values.update(
            jwt_secret=args.jwt_secret,
            jwt_public_key=public_key,
            jwt_audience=args.jwt_audience,
            jwt_issuer=args.jwt_issuer,
            insecure=args.insecure,
            allowed_origins=tuple(args.allowed_origin),
            allowed_hosts=tuple(args.allowed_host),
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            max_brief_chars=args.max_brief_chars,
            max_request_bytes=args.max_request_bytes,
            max_frame_bytes=args.max_frame_bytes,
            max_subscribers_per_job=args.max_subscribers_per_job,
            max_subscribers_per_address=args.max_subscribers_per_address,
            max_jobs_per_caller=args.max_jobs_per_caller,
        )
    values.update(override)
    return ServerConfig(**values)  # type: ignore[arg-type]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chimera", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the server (gRPC + WebSocket)")
    _add_server_flags(p)
    p.add_argument(
        "--workers", type=_positive, default=1, metavar="N",
        help="run N server processes on the same ports, supervised (needs --redis "
        "and fixed ports; default 1)",
    )
    p.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    # A --workers child's index, named on each of its log lines; set by the parent.
    p.add_argument("--worker-id", type=int, default=None, help=argparse.SUPPRESS)
    _add_provider_flags(p)
    _add_security_flags(p)
    _add_metrics_flags(p)

    p = sub.add_parser("submit", help="submit a brief and watch both teams live")
    p.add_argument("brief")
    p.add_argument("--server", default=DEFAULT_SERVER, help=f"gRPC address ({DEFAULT_SERVER})")
    p.add_argument("--team", type=_team, action="append", default=[], help="only this team")
    p.add_argument("--job-id", default="", help="choose the job id")
    p.add_argument("--request-id", default="", help="idempotency key")
    _add_client_flags(p)

    for name, text in (("status", "show a job"), ("cancel", "cancel a running job")):
        p = sub.add_parser(name, help=text)
        p.add_argument("job_id")
        p.add_argument("--server", default=DEFAULT_SERVER)
        p.add_argument("--json", action="store_true", help="print the job as JSON")
        _add_client_flags(p)

    p = sub.add_parser("jobs", help="list jobs, newest first")
    p.add_argument("--server", default=DEFAULT_SERVER)
    p.add_argument("--limit", type=int, default=20)
    _add_client_flags(p)

    p = sub.add_parser("watch", help="print a job's WebSocket messages as JSON lines")
    p.add_argument("job_id")
    p.add_argument(
        "--ws", default=f"ws://127.0.0.1:{DEFAULT_WS_PORT}",
        help="WebSocket base URL (wss://… with TLS)",
    )
    p.add_argument("--since", type=int, default=0, help="only events after this seq")
    p.add_argument(
        "--epoch", default="",
        help="the epoch of that seq (data.epoch of the connected line it came with): "
        "resuming is refused (close 4410) if the server's store has lost its data since",
    )
    p.add_argument(
        "--no-deltas", action="store_true",
        help="leave out code_delta messages (?deltas=0): only the guide's types; their "
        "seqs are skipped, so seq has gaps, and --since the last one printed still resumes",
    )
    _add_client_flags(p)

    p = sub.add_parser("token", help="mint a signed token (prints it)")
    p.add_argument("--sub", required=True, help="who the token names (owner of its jobs)")
    p.add_argument("--scope", required=True, help="comma-separated: submit, read, cancel")
    p.add_argument("--job", default=None, metavar="ID", help="limit the token to this job id")
    p.add_argument("--all-jobs", action="store_true",
                   help="read/cancel every job, not only the sub's own")
    p.add_argument("--ttl", type=_non_negative, default=DEFAULT_TTL, metavar="SECONDS",
                   help=f"lifetime (default {DEFAULT_TTL:g})")
    p.add_argument(
        "--jwt-secret", default=os.environ.get(SECRET_ENV, ""), metavar="SECRET",
        help=f"HS256 secret, as given to serve (default ${SECRET_ENV})",
    )
    p.add_argument("--jwt-private-key", default="", metavar="PATH",
                   help="PEM private key instead of a secret (RSA → RS256, P-256 → ES256)")
    p.add_argument("--jwt-audience", default=DEFAULT_AUDIENCE)
    p.add_argument("--jwt-issuer", default=DEFAULT_ISSUER)
    p.add_argument(
        "--link", action="store_true",
        help="print a link to the job's page with the token in its #fragment (needs --job)",
    )
    p.add_argument(
        "--url", default=DEFAULT_WEB_URL, metavar="URL",
        help=f"the Command Center's address, for --link (default {DEFAULT_WEB_URL})",
    )

    p = sub.add_parser("demo", help="one process: start a server, run a brief end to end")
    p.add_argument("brief", nargs="?", default=DEFAULT_BRIEF)
    _add_server_flags(p)
    _add_provider_flags(p)
    p.add_argument(
        "--fake-apis", action="store_true",
        help="run both teams' real SDKs against local fake Anthropic and Gemini APIs "
        "(no key, no network): shows real-SDK streaming end to end",
    )
    p.set_defaults(grpc_port=0, ws_port=0, db="")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    raw_argv = list(argv) if argv is not None else sys.argv[1:]
    # The namespace is made holding the command line as given (``--workers`` runs it
    # again in each worker); argparse fills in the rest.
    args = build_parser().parse_args(raw_argv, argparse.Namespace(raw_argv=raw_argv))
    logs.configure(getattr(args, "log_format", None), verbose=args.verbose,
                   worker=getattr(args, "worker_id", None))
    command = {
        "serve": _serve,
        "submit": _submit,
        "status": _status,
        "cancel": _cancel,
        "jobs": _jobs,
        "watch": _watch,
        "demo": _demo,
    }.get(args.command)
    try:
        if command is None:
            return _token(args)
        return eventloop.run(command(args), getattr(args, "loop", "auto"))
    except KeyboardInterrupt:
        return 130
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except grpc.aio.AioRpcError as exc:
        Console(stderr=True).print(f"[red]error:[/] {exc.code().name}: {exc.details()}")
        return 2
    except ValueError as exc:  # a bad setting, found while building the server
        Console(stderr=True).print(f"[red]error:[/] {exc}")
        return 2


async def _serve(args: argparse.Namespace) -> int:
    """Serves until a signal. SIGTERM and SIGINT mean the same: the first drains
    (:meth:`ChimeraServer.drain`: new jobs refused, running ones finish, for up to
    ``--drain-timeout`` s; Ctrl-C in a terminal too, so a deploy and a person stop
    alike), the second stops at once. Returns 0 either way."""
    if args.workers > 1:
        if not args.redis:
            raise ConfigError("--workers needs --redis: the workers share jobs through it")
        if args.grpc_port == 0 or args.ws_port == 0:
            raise ConfigError("--workers needs fixed --grpc-port and --ws-port (not 0)")
        _config(args).check()
        return await supervise(args.raw_argv, args.workers, drain_timeout=args.drain_timeout)
    server = ChimeraServer(_config(args))
    loop = asyncio.get_running_loop()
    signals = 0

    def on_signal() -> None:
        # The first SIGTERM or SIGINT drains; the next one stops at once.
        nonlocal signals
        signals += 1
        if signals == 1:
            server.drain()
        else:
            server.stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    config = server.config
    log.info("SIGTERM or SIGINT drains (new jobs refused, running ones finish, for up "
             "to %g s: --drain-timeout); a second one stops at once", config.drain_timeout)
    if config.auth_enabled:
        kind = "HS256 secret" if config.jwt_secret else "public key"
        log.info("auth on: tokens checked with the %s (aud %r, iss %r)",
                 kind, config.jwt_audience, config.jwt_issuer)
    else:
        log.warning("auth off: anyone who can reach %s may submit, read and cancel jobs",
                    config.host)
    await server.serve()
    return 0


def _token(args: argparse.Namespace) -> int:
    """Mints a token with the server's secret (or a private key); prints it on stdout."""
    try:
        scopes = parse_scopes(args.scope)
    except ValueError as exc:
        print(f"error: --scope: {exc}", file=sys.stderr)
        return 2
    if args.job is not None and not is_valid_job_id(args.job):
        print(f"error: malformed --job {args.job!r}", file=sys.stderr)
        return 2
    if args.link and args.job is None:
        print("error: --link needs --job ID: a link opens one job's page", file=sys.stderr)
        return 2
    if args.link and not args.url.startswith(("http://", "https://")):
        print(f"error: --url must start with http:// or https://, not {args.url!r}",
              file=sys.stderr)
        return 2
    key: object
    if args.jwt_private_key:
        from cryptography.hazmat.primitives.asymmetric import ec, rsa
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        try:
            key = load_pem_private_key(Path(args.jwt_private_key).read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(f"cannot load --jwt-private-key: {exc}") from exc
        if isinstance(key, rsa.RSAPrivateKey):
            algorithm = "RS256"
        elif isinstance(key, ec.EllipticCurvePrivateKey):
            algorithm = "ES256"
        else:
            raise ConfigError("--jwt-private-key must be an RSA or P-256 key")
    else:
        if not args.jwt_secret:
            raise ConfigError(f"give --jwt-secret (or set {SECRET_ENV}) or --jwt-private-key")
        check_secret(args.jwt_secret)
        key, algorithm = args.jwt_secret, "HS256"
    token = mint(
        key, sub=args.sub, scopes=scopes, algorithm=algorithm, job=args.job,
        all_jobs=args.all_jobs, ttl=args.ttl, audience=args.jwt_audience,
        issuer=args.jwt_issuer,
    )
    if args.link:
        # In the fragment, the token never reaches a server (nor its logs).
        print(f"{args.url.rstrip('/')}/jobs/{args.job}#token={token}")
    else:
        print(token)
    return 0


def _client(args: argparse.Namespace) -> JobsClient:
    ca = _read_ca(args.tls_ca)
    return JobsClient(args.server, token=args.token or None, tls_ca=ca)


def _read_ca(path: str | None) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read --tls-ca: {exc}") from exc


async def _follow(client: JobsClient, job: pb.Job, console: Console) -> pb.Job:
    """Prints the job's events as they come, then returns it finished.

    The stream carries the epoch CreateJob answered with: should the server's
    store lose its data meanwhile, the stream fails (OUT_OF_RANGE) rather than
    showing another job created under the same id."""
    view = LiveView(console)
    async for event in client.events(job.job_id, 0, job.epoch):
        view.show(event)
    return await client.get(job.job_id)


async def _submit(args: argparse.Namespace) -> int:
    console = Console()
    async with _client(args) as client:
        job = await client.create(
            args.brief, [TEAM_TO_PB[t] for t in args.team], args.job_id, args.request_id
        )
        console.print(f"[bold]job {job.job_id}[/] submitted: {job.brief}")
        job = await _follow(client, job, console)
    render_code(console, job)
    render_job(console, job)
    return 0 if job.state == pb.JOB_STATE_SUCCEEDED else 1


async def _status(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        job = await client.get(args.job_id)
    _show(job, args.json)
    return 0


async def _cancel(args: argparse.Namespace) -> int:
    async with _client(args) as client:
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
    async with _client(args) as client:
        response = await client.list(page_size=max(1, min(args.limit, 100)))
    render_jobs(Console(), list(response.jobs))
    return 0


async def _watch(args: argparse.Namespace) -> int:
    errors = Console(stderr=True)
    if not is_valid_job_id(args.job_id):
        errors.print(f"[red]error:[/] malformed job id {args.job_id!r}")
        return 2
    query = {
        "since": args.since, **({"epoch": args.epoch} if args.epoch else {}),
        **({"deltas": 0} if args.no_deltas else {}),
    }
    url = f"{args.ws.rstrip('/')}/ws/orchestrate/{args.job_id}?{urlencode(query)}"
    context = None
    if args.tls_ca is not None:
        context = ssl.create_default_context(cafile=args.tls_ca)
    elif url.startswith("wss://"):  # the system's CAs (websockets refuses ssl=None here)
        context = ssl.create_default_context()
    # Not a browser: the token goes in a header, never in the URL.
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else None
    try:
        async with connect(
            url, ssl=context, additional_headers=headers,
            logger=redacting_logger("chimera.watch"),  # -v logs headers at DEBUG
        ) as ws:
            with contextlib.suppress(ConnectionClosed):
                async for message in ws:
                    text = message if isinstance(message, str) else message.decode()
                    print(json.dumps(json.loads(text), ensure_ascii=False), flush=True)
            code = ws.close_code
    except InvalidStatus as exc:
        body = exc.response.body.decode(errors="replace").strip() if exc.response.body else ""
        errors.print(f"[red]refused:[/] HTTP {exc.response.status_code} {body}")
        return 2
    except ssl.SSLCertVerificationError as exc:
        errors.print(
            f"[red]cannot verify the TLS certificate of {url}:[/] {exc.verify_message}; "
            "pass --tls-ca PATH with the certificate to trust (for a self-signed server, "
            "its --tls-cert file)"
        )
        return 2
    except (OSError, InvalidURI) as exc:
        errors.print(f"[red]cannot connect to {url}:[/] {exc}")
        return 2
    return 0 if code in (1000, None) else 1


async def _demo(args: argparse.Namespace) -> int:
    async with contextlib.AsyncExitStack() as stack:
        config = _config(args, db=args.db or str(Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="chimera-demo-"))) / "chimera.db"))
        providers = None
        if args.fake_apis:
            fakes = await stack.enter_async_context(fake_apis(args.sim_delay))
            settings = replace(
                config.providers,
                modes=dict.fromkeys(TeamName, Mode.REAL),
                options={
                    team: {**config.providers.options.get(team, {}), "base_url": url}
                    for team, url in (
                        (TeamName.ANTHROPIC, fakes.anthropic_url),
                        (TeamName.GOOGLE, fakes.gemini_url),
                    )
                },
            )
            providers = Providers(
                settings, environ={"ANTHROPIC_API_KEY": fakes.key, "GEMINI_API_KEY": fakes.key}
            )
            stack.push_async_callback(providers.aclose)
            for team, text in providers.descriptions.items():
                log.info("team %s: %s (local fake API)", team.value, text)
        return await _run_demo(args.brief, ChimeraServer(config, providers=providers))


async def _run_demo(brief: str, server: ChimeraServer) -> int:
    """Serves in this process, submits ``brief`` over gRPC and follows it, then stops."""
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
                job = await client.create(brief)
                console.print(f"[bold]job {job.job_id}[/] submitted: {job.brief}")
                job = await _follow(client, job, console)
        finally:
            server.stop()
        await serving
    render_code(console, job)
    render_job(console, job)
    return 0 if job.state == pb.JOB_STATE_SUCCEEDED else 1
