"""The chimera command: serve, config, submit, status, jobs, cancel, watch, token, demo.

``serve``, ``demo`` and ``config`` take the server settings (:mod:`chimera.settings`:
flags, environment, ``--config`` file). The client commands print for people, or
with ``--json`` for scripts (:mod:`chimera.console`). Exit codes: :class:`ExitCode`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shlex
import signal
import ssl
import sys
import tempfile
import textwrap
from collections.abc import Awaitable, Sequence
from dataclasses import replace
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlencode

import grpc

from chimera import __version__, eventloop, gcpace
from chimera.auth.principal import parse_scopes
from chimera.auth.redact import redacting_logger
from chimera.auth.tokens import (
    DEFAULT_AUDIENCE,
    DEFAULT_ISSUER,
    DEFAULT_TTL,
    check_secret,
    mint,
)
from chimera.defaults import DEFAULT_GC_THRESHOLD, DEFAULT_GRPC_PORT, DEFAULT_WS_PORT, LOOPBACK
from chimera.errors import ConfigError
from chimera.events import JobState, TeamName
from chimera.ids import is_valid_job_id
from chimera.observability import logs
from chimera.providers.registry import Mode, Providers
from chimera.server import ChimeraServer
from chimera.settings import (
    BY_NAME,
    DEMO_GROUPS,
    SERVE_GROUPS,
    TEAM,
    TEAM_NAMES,
    Settings,
    add_flags,
    argument_type,
    effective,
    given,
    markdown,
    resolve,
    server_config,
    table,
)
from chimera.v1 import jobs_pb2 as pb
from chimera.wire import STATE_TO_PB, TEAM_TO_PB

# What only the client commands, the demo and --workers use (rich, the client, the
# fake APIs, the supervisor, websockets' client) is imported by them: ``chimera
# serve`` starts without it (tests/test_startup.py).
if TYPE_CHECKING:
    from rich.console import Console

    from chimera.client import JobsClient

DEFAULT_SERVER = f"{LOOPBACK}:{DEFAULT_GRPC_PORT}"
DEFAULT_WS = f"ws://{LOOPBACK}:{DEFAULT_WS_PORT}"
DEFAULT_WEB_URL = f"http://{LOOPBACK}:{DEFAULT_WS_PORT}"
DEFAULT_BRIEF = "Create a login form with email and password"
SECRET_ENV = BY_NAME["jwt_secret"].variables[0]
TOKEN_ENV = "CHIMERA_TOKEN"
# The demo serves on any free ports, in a database of its own (a temporary file).
DEMO_DEFAULTS = {"grpc_port": 0, "ws_port": 0, "db": ""}

log = logging.getLogger("chimera")
T = TypeVar("T")


class ExitCode(IntEnum):
    """What ``chimera`` exits with (:data:`EXIT_MEANINGS`). ``submit``, ``watch``
    and ``demo`` say how the job ended; the other commands use 0, 2 and 4."""

    SUCCEEDED = 0
    FAILED = 1
    USAGE = 2
    CANCELLED = 3
    UNREACHABLE = 4
    UNFINISHED = 5
    INTERRUPTED = 130


EXIT_MEANINGS = {
    ExitCode.SUCCEEDED: "the job succeeded (other commands: done)",
    ExitCode.FAILED: "the job failed",
    ExitCode.USAGE: "bad usage or settings, or the server refused the request (the error "
    "says why)",
    ExitCode.CANCELLED: "the job was cancelled",
    ExitCode.UNREACHABLE: "the server cannot be reached, or is draining (UNAVAILABLE): try "
    "again or elsewhere",
    ExitCode.UNFINISHED: "the stream ended before the job did (server stopped, history gone, "
    "subscriber too slow, token expired): watch again to see the end",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C): a submitted job goes on, and submit says "
    "how to follow it",
}
EXIT_CODES = "\n".join([
    "exit codes (the same for submit, watch and demo; the other commands use 0, 2 and 4):",
    *(textwrap.fill(text, 88, initial_indent=f"  {code.value:<5}", subsequent_indent=" " * 7)
      for code, text in EXIT_MEANINGS.items()),
])

SETTINGS_EPILOG = """\
Every setting is also an environment variable, CHIMERA_ and its name in capitals
(CHIMERA_JOB_DEADLINE), and a top-level key of the --config file (job_deadline = 300).
A flag beats the environment, which beats the file. "chimera config" prints the
settings in force and where each came from."""

STATE_EXIT = {
    JobState.SUCCEEDED: ExitCode.SUCCEEDED,
    JobState.FAILED: ExitCode.FAILED,
    JobState.CANCELLED: ExitCode.CANCELLED,
}
PB_STATE_EXIT = {STATE_TO_PB[state]: code for state, code in STATE_EXIT.items()}


class StreamEnded(Exception):
    """A job's event stream ended before the job did: :attr:`ExitCode.UNFINISHED`."""


def _non_negative(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return number


def _page_size(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 100:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to 100, not {value!r}")
    return int(value)


def _since(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"must be a seq, 0 or more, not {value!r}")
    return int(value)


def _add_client_flags(p: argparse.ArgumentParser, *, grpc_server: bool = True) -> None:
    if grpc_server:
        p.add_argument("--server", default=DEFAULT_SERVER, metavar="HOST:PORT",
                       help=f"the server's gRPC address (default {DEFAULT_SERVER})")
    p.add_argument("--token", default=os.environ.get(TOKEN_ENV), metavar="TOKEN",
                   help=f"bearer token, when the server has auth on (default ${TOKEN_ENV})")
    p.add_argument("--tls-ca", default=None, metavar="PATH",
                   help="PEM certificate to trust: connect with TLS (for a self-signed "
                   "server, its --tls-cert file)")


def _add_json_flag(p: argparse._ActionsContainer, what: str) -> None:
    p.add_argument("--json", action="store_true", help=f"for scripts: print {what} as JSON")


class _Formatter(argparse.HelpFormatter):
    """Wraps a description to the terminal; keeps text written in lines (the exit
    codes' table) as it is."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def _subparser(
    sub: Any, name: str, text: str, description: str = "", epilog: str | None = None,
    usage: str | None = None,
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=text, description=description or text[0].upper() + text[1:] + ".",
        epilog=epilog, formatter_class=_Formatter, usage=usage,
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chimera",
        description="Chimera runs one team per LLM provider on a brief and streams their "
        "work live over gRPC and WebSocket.",
        epilog=EXIT_CODES, formatter_class=_Formatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="what to do (chimera COMMAND --help for its flags)")

    # The settings' flags are too many for a usage line: --help lists them.
    settings_usage = "%(prog)s [--config FILE] [SETTING FLAGS…]"
    p = _subparser(sub, "serve", "run the server (gRPC and WebSocket)",
                   epilog=SETTINGS_EPILOG, usage=settings_usage)
    add_flags(p, table(SERVE_GROUPS))
    # Set by --workers in its children (chimera.cluster.workers), not by people:
    # SO_REUSEPORT, and the child's index, named on each of its log lines.
    p.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--worker-id", type=int, default=None, help=argparse.SUPPRESS)

    p = _subparser(
        sub, "config", "print the server settings in force and where each came from",
        description="Print the settings chimera serve would run with, given the same flags, "
        "environment and --config file, and where each came from (flag, env, file, "
        "default); secrets are masked. Exits 2, saying why, if serve would refuse them.",
        epilog=SETTINGS_EPILOG, usage=settings_usage + " [--json | --markdown]",
    )
    add_flags(p, table(SERVE_GROUPS))
    output = p.add_mutually_exclusive_group()
    _add_json_flag(output, "each setting's value, source and from")
    output.add_argument("--markdown", action="store_true",
                        help="print the table of every setting (the README's), and exit")

    p = _subparser(sub, "submit", "submit a brief and watch both teams live",
                   description="Submit a brief, print each event as it comes, then each "
                   "team's code. Ctrl-C stops watching (the job goes on) and says how to "
                   "follow or cancel it.", epilog=EXIT_CODES)
    p.add_argument("brief", help="what to build, e.g. \"Create a login form\"")
    p.add_argument("--team", type=argument_type(TEAM, "team"), action="append", default=[],
                   help=f"run only this team ({', '.join(TEAM_NAMES)}); repeatable")
    p.add_argument("--job-id", default="", help="choose the job's id (default: a new UUID)")
    p.add_argument("--request-id", default="",
                   help="idempotency key: the same key again returns the same job")
    _add_json_flag(p, "the job's events, one message a line (as watch prints them)")
    _add_client_flags(p)

    for name, text in (("status", "show a job"), ("cancel", "cancel a running job")):
        p = _subparser(sub, name, text)
        p.add_argument("job_id", help="the job's id")
        _add_json_flag(p, "the job (as GET /api/jobs/JOB_ID)")
        _add_client_flags(p)

    p = _subparser(sub, "jobs", "list jobs, newest first")
    p.add_argument("--limit", type=_page_size, default=20, metavar="N",
                   help="at most this many jobs, 1 to 100 (default 20)")
    _add_json_flag(p, "the jobs (as GET /api/jobs)")
    _add_client_flags(p)

    p = _subparser(
        sub, "watch", "print a job's WebSocket messages as JSON lines",
        description="Print a job's WebSocket messages as they come, one JSON object per "
        "line (the streaming guide's format), until the job ends.", epilog=EXIT_CODES,
    )
    p.add_argument("job_id", help="the job's id")
    p.add_argument("--ws", default=DEFAULT_WS, metavar="URL",
                   help=f"the server's WebSocket address (default {DEFAULT_WS}; wss://… "
                   "with TLS)")
    p.add_argument("--since", type=_since, default=0, metavar="SEQ",
                   help="only the events after this seq (default 0: all)")
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
    p.add_argument("--json", action="store_true",
                   help="JSON lines (what watch always prints; accepted for scripts "
                   "that pass --json to every command)")
    _add_client_flags(p, grpc_server=False)

    p = _subparser(sub, "token", "mint a signed token (prints it)")
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
                   help="PEM private key instead of a secret (RSA: RS256, P-256: ES256)")
    p.add_argument("--jwt-audience", default=DEFAULT_AUDIENCE,
                   help=f"the aud claim, as serve requires it (default {DEFAULT_AUDIENCE})")
    p.add_argument("--jwt-issuer", default=DEFAULT_ISSUER,
                   help=f"the iss claim, as serve requires it (default {DEFAULT_ISSUER})")
    p.add_argument(
        "--link", action="store_true",
        help="print a link to the job's page with the token in its #fragment (needs --job)",
    )
    p.add_argument(
        "--url", default=DEFAULT_WEB_URL, metavar="URL",
        help=f"the Command Center's address, for --link (default {DEFAULT_WEB_URL})",
    )
    _add_json_flag(p, '{"token": …} (and "link" with --link)')

    p = _subparser(sub, "demo", "one process: start a server, run a brief end to end",
                   epilog=EXIT_CODES, usage=settings_usage + " [--fake-apis] [--json] [BRIEF]")
    p.add_argument("brief", nargs="?", default=DEFAULT_BRIEF,
                   help=f"what to build (default \"{DEFAULT_BRIEF}\")")
    add_flags(p, table(DEMO_GROUPS))
    p.add_argument(
        "--fake-apis", action="store_true",
        help="run both teams' real SDKs against local fake Anthropic and Gemini APIs "
        "(no key, no network): shows real-SDK streaming end to end",
    )
    _add_json_flag(p, "the job's events, one message a line (as watch prints them)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    raw_argv = list(argv) if argv is not None else sys.argv[1:]
    # The namespace is made holding the command line as given (``--workers`` runs it
    # again in each worker); argparse fills in the rest.
    args = build_parser().parse_args(raw_argv, argparse.Namespace(raw_argv=raw_argv))
    try:
        if args.command == "config" and args.markdown:
            print(markdown(), end="")
            return ExitCode.SUCCEEDED
        settings = _settings(args)
        log_format = settings.values.get("log_format", "auto")
        logs.configure(None if log_format == "auto" else log_format, verbose=args.verbose,
                       worker=getattr(args, "worker_id", None))
        if args.command == "token":
            return _token(args)
        if args.command == "config":
            return _show_config(args, settings)
        if args.command in ("serve", "demo"):
            run = _serve if args.command == "serve" else _demo
            gcpace.pace(settings.values.get("gc_threshold", DEFAULT_GC_THRESHOLD))
            return eventloop.run(run(args, settings), settings.values.get("loop", "auto"))
        command = {"submit": _submit, "status": _status, "cancel": _cancel, "jobs": _jobs,
                   "watch": _watch}[args.command]
        return asyncio.run(command(args))
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except StreamEnded as exc:
        _errors().print(f"[red]error:[/] {exc}")
        return ExitCode.UNFINISHED
    except grpc.aio.AioRpcError as exc:
        _errors().print(f"[red]error:[/] {exc.code().name}: {exc.details()}")
        if exc.code() is grpc.StatusCode.UNAVAILABLE:
            return ExitCode.UNREACHABLE
        return ExitCode.USAGE
    except ValueError as exc:  # a bad setting, found while building the server
        _errors().print(f"[red]error:[/] {exc}")
        return ExitCode.USAGE
    except BrokenPipeError:
        # The reader went away (``| head``): nothing more to say, to anyone. The
        # exit code is that of a program SIGPIPE ended, as for any other tool.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def _errors() -> Console:
    """Where errors go: stderr, one line each however long (a log or a script reads it)."""
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


def _settings(args: argparse.Namespace) -> Settings:
    """The server settings of ``serve``, ``demo`` and ``config``; none for the
    other commands."""
    if args.command not in ("serve", "demo", "config"):
        return Settings({})
    demo = args.command == "demo"
    chosen = table(DEMO_GROUPS if demo else SERVE_GROUPS)
    return resolve(
        given(args, chosen), os.environ, config_path=args.config_path, settings=chosen,
        defaults=DEMO_DEFAULTS if demo else None,
    )


def _print_json(value: Any, *, line: bool = False) -> None:
    """One JSON document (indented), or one line of a stream of them."""
    print(json.dumps(value, ensure_ascii=False, indent=None if line else 2), flush=line)


def _show_config(args: argparse.Namespace, settings: Settings) -> int:
    """``chimera config``: the settings in force, then serve's own checks on them."""
    report = effective(settings)
    if args.json:
        _print_json(report)
    else:
        shown = {name: BY_NAME[name].show(settings[name]) or "none" for name in report}
        width = max(len(name) for name in report)
        value_width = min(40, max(len(text) for text in shown.values()))
        print(f"{'setting':<{width}}  {'value':<{value_width}}  from")
        for name, row in report.items():
            source = f"{row['source']} {row['from']}".strip()
            print(f"{name:<{width}}  {shown[name]:<{value_width}}  {source}")
    server_config(settings).check()  # what serve would refuse: exit 2, saying why
    return ExitCode.SUCCEEDED


async def _serve(args: argparse.Namespace, settings: Settings) -> int:
    """Serves until a signal. SIGTERM and SIGINT mean the same: the first drains
    (:meth:`ChimeraServer.drain`: new jobs refused, running ones finish, for up to
    ``--drain-timeout`` s; Ctrl-C in a terminal too, so a deploy and a person stop
    alike), the second stops at once. Returns 0 either way."""
    config = server_config(settings, reuse_port=args.reuse_port)
    if settings["workers"] > 1:
        if not config.redis_url:
            raise ConfigError("--workers needs --redis: the workers share jobs through it")
        if config.grpc_port == 0 or config.ws_port == 0:
            raise ConfigError("--workers needs fixed --grpc-port and --ws-port (not 0)")
        config.check()
        from chimera.cluster.workers import supervise

        return await supervise(args.raw_argv, settings["workers"],
                               drain_timeout=config.drain_timeout)
    server = ChimeraServer(config)
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
    return ExitCode.SUCCEEDED


def _token(args: argparse.Namespace) -> int:
    """Mints a token with the server's secret (or a private key); prints it on stdout."""
    try:
        scopes = parse_scopes(args.scope)
    except ValueError as exc:
        print(f"error: --scope: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    if args.job is not None and not is_valid_job_id(args.job):
        print(f"error: malformed --job {args.job!r}", file=sys.stderr)
        return ExitCode.USAGE
    if args.link and args.job is None:
        print("error: --link needs --job ID: a link opens one job's page", file=sys.stderr)
        return ExitCode.USAGE
    if args.link and not args.url.startswith(("http://", "https://")):
        print(f"error: --url must start with http:// or https://, not {args.url!r}",
              file=sys.stderr)
        return ExitCode.USAGE
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
    # In the fragment, the token never reaches a server (nor its logs).
    link = f"{args.url.rstrip('/')}/jobs/{args.job}#token={token}" if args.link else None
    if args.json:
        _print_json({"token": token, **({"link": link} if link else {})})
    else:
        print(link or token)
    return ExitCode.SUCCEEDED


def _client(args: argparse.Namespace) -> JobsClient:
    from chimera.client import JobsClient

    ca = _read_ca(args.tls_ca)
    return JobsClient(args.server, token=args.token or None, tls_ca=ca)


def _read_ca(path: str | None) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read --tls-ca: {exc}") from exc


async def _follow(client: JobsClient, job: pb.Job, console: Console, as_json: bool) -> pb.Job:
    """Prints the job's events as they come (``as_json``: the WebSocket's messages,
    one per line), then returns it finished. Raises :class:`StreamEnded` if the
    stream ends first.

    The stream carries the epoch CreateJob answered with: should the server's
    store lose its data meanwhile, the stream fails (OUT_OF_RANGE) rather than
    showing another job created under the same id."""
    from chimera.console import LiveView, event_json

    view = LiveView(console)
    try:
        async for event in client.events(job.job_id, 0, job.epoch):
            if as_json:
                _print_json(event_json(event), line=True)
            else:
                view.show(event)
    except grpc.aio.AioRpcError as exc:
        raise StreamEnded(
            f"the events of job {job.job_id} stopped before it ended: "
            f"{exc.code().name}: {exc.details()}"
        ) from exc
    return await client.get(job.job_id)


def _job_exit(job: pb.Job) -> int:
    code = PB_STATE_EXIT.get(job.state)
    if code is None:
        raise StreamEnded(f"the events of job {job.job_id} ended while it still runs")
    return code


async def until_interrupted(work: Awaitable[T]) -> T | None:
    """``work``'s result; None if SIGINT (Ctrl-C) comes first, which cancels
    ``work``. Any other cancellation propagates."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    interrupted = False

    def on_interrupt() -> None:
        nonlocal interrupted
        interrupted = True
        task.cancel()

    loop.add_signal_handler(signal.SIGINT, on_interrupt)
    try:
        return await work
    except asyncio.CancelledError:
        if interrupted and task.uncancel() == 0:
            return None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGINT)


async def _submit(args: argparse.Namespace) -> int:
    from rich.console import Console

    from chimera.console import render_code, render_job

    console = Console()
    async with _client(args) as client:
        job = await client.create(
            args.brief, [TEAM_TO_PB[t] for t in args.team], args.job_id, args.request_id
        )
        if not args.json:
            console.print(f"[bold]job {job.job_id}[/] submitted: {job.brief}")
        final = await until_interrupted(_follow(client, job, console, args.json))
    if final is None:
        print(_follow_hint(args, job.job_id), file=sys.stderr)
        return ExitCode.INTERRUPTED
    if not args.json:
        render_code(console, final)
        render_job(console, final)
    return _job_exit(final)


def _follow_hint(args: argparse.Namespace, job_id: str) -> str:
    """What Ctrl-C on ``submit`` prints: the job goes on, and the commands that
    follow it or cancel it, with the flags this ``submit`` was given."""
    flags = "" if args.server == DEFAULT_SERVER else f" --server {shlex.quote(args.server)}"
    if args.tls_ca:
        flags += f" --tls-ca {shlex.quote(args.tls_ca)}"
    ws = ""
    if args.server != DEFAULT_SERVER or args.tls_ca:
        host = args.server.rpartition(":")[0] or args.server
        scheme = "wss" if args.tls_ca else "ws"
        ws = f" --ws {scheme}://{host}:{DEFAULT_WS_PORT}"
        if args.tls_ca:
            ws += f" --tls-ca {shlex.quote(args.tls_ca)}"
    job = shlex.quote(job_id)
    lines = [
        f"interrupted: job {job_id} goes on without you.",
        f"  follow it: chimera watch {job}{ws}"
        + ("   (the server's WebSocket address)" if ws else ""),
        f"  its state: chimera status {job}{flags}",
        f"  cancel it: chimera cancel {job}{flags}",
    ]
    if args.token:
        lines.append(f"  (each with the same token: --token, or ${TOKEN_ENV})")
    return "\n".join(lines)


async def _status(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        job = await client.get(args.job_id)
    _show(job, args.json)
    return ExitCode.SUCCEEDED


async def _cancel(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        job = await client.cancel(args.job_id)
    _show(job, args.json)
    return ExitCode.SUCCEEDED


def _show(job: pb.Job, as_json: bool) -> None:
    from rich.console import Console

    from chimera.console import job_json, render_job

    if as_json:
        _print_json(job_json(job))
    else:
        render_job(Console(), job)


async def _jobs(args: argparse.Namespace) -> int:
    from rich.console import Console

    from chimera.console import job_json, render_jobs

    async with _client(args) as client:
        response = await client.list(page_size=args.limit, view=pb.JOB_VIEW_BASIC)
    if args.json:
        _print_json({"jobs": [job_json(job, epoch=False) for job in response.jobs],
                     "next_page_token": response.next_page_token})
    else:
        render_jobs(Console(), list(response.jobs))
    return ExitCode.SUCCEEDED


async def _watch(args: argparse.Namespace) -> int:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI

    errors = _errors()
    if not is_valid_job_id(args.job_id):
        errors.print(f"[red]error:[/] malformed job id {args.job_id!r}")
        return ExitCode.USAGE
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
    ended: JobState | None = None
    try:
        async with connect(
            url, ssl=context, additional_headers=headers,
            logger=redacting_logger("chimera.watch"),  # -v logs headers at DEBUG
        ) as ws:
            with contextlib.suppress(ConnectionClosed):
                async for message in ws:
                    text = message if isinstance(message, str) else message.decode()
                    obj = json.loads(text)
                    _print_json(obj, line=True)
                    ended = _job_end(obj) or ended
            code, reason = ws.close_code, ws.close_reason
    except InvalidStatus as exc:
        body = exc.response.body.decode(errors="replace").strip() if exc.response.body else ""
        errors.print(f"[red]refused:[/] HTTP {exc.response.status_code} {body}")
        return ExitCode.USAGE
    except ssl.SSLCertVerificationError as exc:
        errors.print(
            f"[red]cannot verify the TLS certificate of {url}:[/] {exc.verify_message}; "
            "pass --tls-ca PATH with the certificate to trust (for a self-signed server, "
            "its --tls-cert file)"
        )
        return ExitCode.USAGE
    except InvalidURI as exc:
        errors.print(f"[red]bad --ws address:[/] {exc}")
        return ExitCode.USAGE
    except OSError as exc:
        errors.print(f"[red]cannot connect to {url}:[/] {exc}")
        return ExitCode.UNREACHABLE
    if ended is not None:
        return STATE_EXIT[ended]
    errors.print(
        f"[red]error:[/] the stream closed ({code} {reason or 'no reason'}) before job "
        f"{args.job_id} ended"
    )
    return ExitCode.UNFINISHED


def _job_end(message: dict[str, Any]) -> JobState | None:
    """The job's final state, if ``message`` is the job's last event (a job-level
    status change to a final state)."""
    if message.get("type") != "status_change" or "team" in message:
        return None
    status = message.get("data", {}).get("status")
    return next((state for state in STATE_EXIT if state.value == status), None)


async def _demo(args: argparse.Namespace, settings: Settings) -> int:
    async with contextlib.AsyncExitStack() as stack:
        config = server_config(settings)
        if not config.db:
            temporary = stack.enter_context(tempfile.TemporaryDirectory(prefix="chimera-demo-"))
            config = replace(config, db=str(Path(temporary) / "chimera.db"))
        providers = None
        if args.fake_apis:
            from chimera.fakes.briefed import fake_apis

            fakes = await stack.enter_async_context(fake_apis(config.sim_delay))
            provider_settings = replace(
                config.providers,
                modes=dict.fromkeys(TeamName, Mode.REAL),
                options={
                    team: {**config.providers.options.get(team, {}), "base_url": url}
                    for team, url in (
                        (TeamName.ANTHROPIC, fakes.anthropic_url),
                        (TeamName.GOOGLE, fakes.gemini_url),
                    )
                },
                api_keys=dict.fromkeys(TeamName, fakes.key),
            )
            providers = Providers(provider_settings, environ={})
            stack.push_async_callback(providers.aclose)
            for team, text in providers.descriptions.items():
                log.info("team %s: %s (local fake API)", team.value, text)
        return await _run_demo(args.brief, ChimeraServer(config, providers=providers), args.json)


async def _run_demo(brief: str, server: ChimeraServer, as_json: bool) -> int:
    """Serves in this process, submits ``brief`` over gRPC and follows it, then stops."""
    from rich.console import Console

    from chimera.client import JobsClient
    from chimera.console import render_code, render_job

    console = Console(stderr=as_json)  # with --json, stdout holds only the events
    failure: Exception | None = None
    async with asyncio.TaskGroup() as tg:
        serving = tg.create_task(server.serve())
        await server.ready.wait()
        console.print(
            f"[dim]demo server: gRPC {LOOPBACK}:{server.grpc_port}, "
            f"WebSocket ws://{LOOPBACK}:{server.ws_port}/ws/orchestrate/{{job_id}}[/]"
        )
        try:
            async with JobsClient(f"{LOOPBACK}:{server.grpc_port}") as client:
                job = await client.create(brief)
                console.print(f"[bold]job {job.job_id}[/] submitted: {job.brief}")
                job = await _follow(client, job, console, as_json)
        except Exception as exc:
            # Raised below, once the server has stopped, as itself: raised here, the
            # task group would wrap it in an ExceptionGroup that main() cannot name.
            failure = exc
        finally:
            server.stop()
        await serving
    if failure is not None:
        raise failure
    if not as_json:
        render_code(console, job)
        render_job(console, job)
    return _job_exit(job)
