"""Every setting of ``chimera serve``, in one table, and where each value comes from.

Each :class:`Setting` is one definition: its name, type (:class:`Kind`), default,
help text, and whether it is secret. From :data:`SETTINGS` come

- the flags of ``serve``, ``demo`` and ``config`` (:func:`add_flags`):
  ``--job-deadline``;
- the environment variables: ``CHIMERA_`` and the name in capitals
  (``CHIMERA_JOB_DEADLINE``), then the names a few settings were read from
  before, which keep working (``ANTHROPIC_API_KEY``, ``CHIMERA_REDIS_URL``);
- the top-level keys of the TOML file that ``--config`` (or ``$CHIMERA_CONFIG``)
  names: ``job_deadline = 300``;
- the README's table (:func:`markdown`, ``chimera config --markdown``).

A value comes from the first that gives it: the flag, the environment, the file,
the default (:func:`resolve`). A file key or a ``CHIMERA_`` variable that is no
setting, or a value of the wrong type, is a :class:`~chimera.errors.ConfigError`
that names it. What 0 means is the same everywhere: a limit of 0 is no limit (the
job deadline, retention); sizes and counts refuse 0 (they have no "unlimited"); a
wait of 0 does not wait (the drain timeout, Redis write retries, the simulated
teams' pause). Each help text says which.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from chimera import eventloop
from chimera.auth.tokens import DEFAULT_AUDIENCE, DEFAULT_ISSUER
from chimera.config import ServerConfig
from chimera.defaults import (
    DEFAULT_DB,
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_GC_THRESHOLD,
    DEFAULT_GRPC_PORT,
    DEFAULT_JOB_DEADLINE,
    DEFAULT_MAX_JOBS_PER_CALLER,
    DEFAULT_MAX_SUBSCRIBERS_PER_ADDRESS,
    DEFAULT_MAX_SUBSCRIBERS_PER_JOB,
    DEFAULT_METRICS_PORT,
    DEFAULT_REDIS_WRITE_TIMEOUT,
    DEFAULT_SIM_DELAY,
    DEFAULT_SUBSCRIBER_MAX_BYTES,
    DEFAULT_WS_PORT,
    LOOPBACK,
    MAX_BRIEF_CHARS,
    MAX_CLIENT_FRAME,
    MAX_MESSAGE_BYTES,
    MIN_SUBSCRIBER_MAX_BYTES,
)
from chimera.errors import ConfigError
from chimera.events import TeamName
from chimera.observability import logs
from chimera.providers.registry import Mode, ProviderSettings
from chimera.providers.table import PROVIDERS

PREFIX = "CHIMERA_"
CONFIG_ENV = "CHIMERA_CONFIG"  # the --config file, when the flag is not given
# CHIMERA_ variables that are not server settings, so not refused as unknown.
OTHER_ENV = {
    "CHIMERA_TOKEN": "the client commands' bearer token (--token)",
    "CHIMERA_SCREENSHOTS": "where the browser tests write their screenshots",
}
MASK = "***"
TEAM_NAMES = tuple(team.value for team in TeamName)
MODES = tuple(mode.value for mode in Mode)


# -- kinds of values ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Kind:
    """How one kind of value is written and checked.

    ``convert`` reads the text of a flag or a variable; a file value must be one
    of ``accepts`` (TOML's own types) and is converted by ``from_file``. Then
    ``check`` checks the value (its range). All three raise ``ValueError`` saying
    what is wrong; ``what`` names the kind in those messages, ``bound`` is the
    range as the help says it."""

    metavar: str
    what: str
    convert: Callable[[str], Any]
    accepts: tuple[type, ...]
    from_file: Callable[[Any], Any] = lambda value: value
    check: Callable[[Any], Any] = lambda value: value
    show: Callable[[Any], str] = str
    bound: str = ""

    def parse(self, text: str) -> Any:
        try:
            value = self.convert(text.strip())
        except BadValue:
            raise
        except ValueError:
            raise BadValue(f"invalid value {text!r}: must be {self.what}") from None
        return self.check(value)

    def read(self, value: object) -> Any:
        """A value from the TOML file: of the right type, then checked."""
        # bool is an int to Python, never a number to a person.
        if not isinstance(value, self.accepts) or (
            isinstance(value, bool) and bool not in self.accepts
        ):
            raise BadValue(f"must be {self.what}, not {value!r} ({_toml_type(value)})")
        try:
            return self.check(self.from_file(value))
        except BadValue:
            raise
        except ValueError:
            raise BadValue(f"invalid value {value!r}: must be {self.what}") from None


class BadValue(ValueError):
    """A value refused, with the words that say why."""


def _safe_redis_url(url: str) -> str:
    # Imported when a Redis URL is shown: Redis's client is slow to import (~100 ms),
    # and a server on SQLite never needs it.
    if not url:
        return url
    from chimera.store.redis import safe_url

    return safe_url(url)


def _toml_type(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string",
             list: "an array", dict: "a table"}
    return next((text for kind, text in names.items() if isinstance(value, kind)), "a date")


def _at_least(minimum: float) -> Callable[[Any], Any]:
    bound = "0 or more" if minimum == 0 else f"at least {minimum:g}"

    def check(value: Any) -> Any:
        if value < minimum:
            raise BadValue(f"must be {bound}, not {value:g}")
        return value

    return check


def _port(value: int) -> int:
    if not 0 <= value <= 65535:
        raise BadValue(f"must be a port number, 0 to 65535 (0 = any free port), not {value}")
    return value


_SWITCH_WORDS = {"1": True, "true": True, "yes": True, "on": True,
                 "0": False, "false": False, "no": False, "off": False}


def _switch(text: str) -> bool:
    if text.lower() not in _SWITCH_WORDS:
        raise ValueError(text)
    return _SWITCH_WORDS[text.lower()]


def _team_modes(text: str) -> dict[TeamName, Mode]:
    modes: dict[TeamName, Mode] = {}
    for item in text.split(","):
        team, sep, mode = item.strip().partition("=")
        if not sep:
            raise BadValue(f"{item!r} is not TEAM=MODE, e.g. anthropic=real,google=simulated")
        if team not in TEAM_NAMES:
            raise BadValue(f"unknown team {team!r}: use {', '.join(TEAM_NAMES)}")
        if mode not in MODES:
            raise BadValue(f"unknown mode {mode!r}: use {', '.join(MODES)}")
        modes[TeamName(team)] = Mode(mode)
    return modes


def _show_modes(value: Mapping[TeamName, Mode]) -> str:
    return ",".join(f"{team.value}={mode.value}" for team, mode in value.items()) or "auto"


def _choice(*values: str) -> Kind:
    def convert(text: str) -> str:
        if text not in values:
            raise ValueError(text)
        return text

    return Kind("|".join(values), f"one of {', '.join(values)}", convert, (str,), convert)


def whole(minimum: int, metavar: str = "N") -> Kind:
    """A whole number of at least ``minimum``."""
    return Kind(metavar, "a whole number", int, (int,), check=_at_least(minimum),
                bound=f"at least {minimum}" if minimum else "")


SECONDS = Kind("SECONDS", "a number of seconds, 0 or more", float, (int, float), float,
               _at_least(0), lambda value: f"{value:g}")
PORT = Kind("PORT", "a port number", int, (int,), check=_port)
TEXT = Kind("TEXT", "text", str, (str,))
PATH = Kind("PATH", "a file path", str, (str,))
URL = Kind("URL", "a URL", str, (str,))
SWITCH = Kind("", "true or false", _switch, (bool,), show=lambda on: "on" if on else "off")
TEAM = Kind("TEAM", f"a team ({', '.join(TEAM_NAMES)})", TeamName, (str,), TeamName,
            show=lambda team: team.value)
TEAM_MODES = Kind(
    "TEAM=MODE[,...]",
    f"TEAM=MODE pairs, e.g. anthropic=real,google=simulated (modes: {', '.join(MODES)})",
    _team_modes, (str,), _team_modes, show=_show_modes,
)


# -- the table ----------------------------------------------------------------

Group = Literal["server", "workers", "teams", "auth", "limits", "metrics"]
GROUPS: dict[Group, str] = {
    "server": "server",
    "workers": "processes",
    "teams": "teams",
    "auth": "authentication and transport",
    "limits": "limits",
    "metrics": "metrics (Prometheus, at http://HOST:PORT/metrics)",
}
SERVE_GROUPS: tuple[Group, ...] = tuple(GROUPS)
DEMO_GROUPS: tuple[Group, ...] = ("server", "teams")


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting: the flag ``--NAME`` (``_`` as ``-``), the variables
    ``CHIMERA_NAME`` and then ``env``, the file key ``NAME``.

    ``repeat``: a list (the flag repeated, a TOML array, a comma-separated
    variable). ``zero``: what 0 means, said in the help. ``shown``: the default
    as the help says it, where the value itself would not say it. ``secret``:
    masked by ``chimera config``; ``redact`` masks part of one (a URL's password).
    """

    name: str
    kind: Kind
    default: Any
    help: str
    group: Group
    secret: bool = False
    repeat: bool = False
    env: tuple[str, ...] = ()
    zero: str = ""
    shown: str = ""
    redact: Callable[[str], str] | None = None
    metavar: str = ""  # the flag's value in --help, where the kind's would not say it

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def value_name(self) -> str:
        return self.metavar or self.kind.metavar

    @property
    def variables(self) -> tuple[str, ...]:
        return (PREFIX + self.name.upper(), *self.env)

    def show(self, value: Any) -> str:
        """The value as a person reads it, secrets masked."""
        if value is None or value in ("", ()):
            return ""
        if self.secret:
            return MASK
        if self.repeat:
            return ",".join(self.kind.show(v) for v in value)
        text = self.kind.show(value)
        return self.redact(text) if self.redact else text

    @property
    def default_text(self) -> str:
        return self.shown or self.show(self.default) or "none"

    @property
    def help_text(self) -> str:
        """The help: what it does, the default, what 0 means, other variables."""
        parts = [f"default {self.default_text}"]
        if self.kind.bound:
            parts.append(self.kind.bound)
        if self.zero:
            parts.append(f"0 = {self.zero}")
        if self.repeat:
            parts.append("repeatable")
        if self.env:
            parts.append("also $" + ", $".join(self.env))
        return f"{self.help} ({'; '.join(parts)})"


def _provider_settings() -> list[Setting]:
    settings = []
    for spec in PROVIDERS:
        settings.append(Setting(
            f"{spec.team.value}_api_key", TEXT, "",
            f"the {spec.team.value.capitalize()} team's API key: it runs its real provider "
            "when set, the simulated one otherwise (prefer the environment or the file to "
            "the flag, which other users see in ps)",
            "teams", secret=True, env=spec.key_envs, shown="none", metavar="KEY",
        ))
        for option in spec.settings:
            kind = TEXT if option.kind is str else whole(0, metavar="TOKENS")
            if option.name == "base_url":
                kind = URL
            settings.append(Setting(
                spec.setting_name(option), kind, option.default, option.help, "teams",
                env=(spec.base_url_env,) if option.name == "base_url" else (),
                shown="" if option.default is not None else "the API's own",
                metavar="MODEL" if option.name == "model" else "",
            ))
    return settings


SETTINGS: tuple[Setting, ...] = (
    Setting("host", TEXT, LOOPBACK, "address both servers bind", "server", metavar="ADDRESS"),
    Setting("grpc_port", PORT, DEFAULT_GRPC_PORT, "gRPC port", "server", zero="any free port"),
    Setting("ws_port", PORT, DEFAULT_WS_PORT, "WebSocket and HTTP port", "server",
            zero="any free port"),
    Setting("db", PATH, DEFAULT_DB,
            "SQLite file for jobs and events; :memory: keeps nothing", "server"),
    Setting("redis", URL, "",
            "share jobs, events and fan-out with other processes through Redis "
            "(redis://HOST:PORT/DB, rediss:// for TLS) instead of --db",
            "server", env=("CHIMERA_REDIS_URL",), shown="none: SQLite", redact=_safe_redis_url),
    Setting("redis_write_timeout", SECONDS, DEFAULT_REDIS_WRITE_TIMEOUT,
            "with --redis: stop a job whose events Redis has not taken for this long",
            "server", zero="no retry"),
    Setting("drain_timeout", SECONDS, DEFAULT_DRAIN_TIMEOUT,
            "on SIGTERM or SIGINT, wait this long for the running jobs to end before "
            "interrupting those left (a second signal stops at once)",
            "server", zero="no wait: stop at once"),
    Setting("job_deadline", SECONDS, DEFAULT_JOB_DEADLINE,
            "stop a job still running after this long (its unfinished teams fail)",
            "server", zero="no limit"),
    Setting("retention", SECONDS, 0.0,
            "remove finished jobs and their events this long after they end "
            "(checked every minute; running jobs never are)",
            "server", zero="no limit: keep everything"),
    Setting("subscriber_max_bytes", whole(MIN_SUBSCRIBER_MAX_BYTES, metavar="BYTES"),
            DEFAULT_SUBSCRIBER_MAX_BYTES,
            "shed a subscriber (close 4008, gRPC RESOURCE_EXHAUSTED; it may resume) whose "
            "unsent events pass this many bytes (less would shed every subscriber)",
            "server"),
    Setting("sim_delay", SECONDS, DEFAULT_SIM_DELAY,
            "simulated teams: pause between steps", "server", zero="no pause"),
    Setting("sim_fail", TEAM, (),
            "make this simulated team fail after thinking (to try a client's error display)",
            "server", repeat=True),
    Setting("log_format", _choice("auto", *logs.FORMATS), "auto",
            "text, or json (one object per line); auto: text on a terminal, json otherwise",
            "server"),
    Setting("loop", _choice(*eventloop.LOOPS), "auto",
            "the event loop: uvloop, asyncio, or auto (uvloop when it imports, else "
            "asyncio's own); the serving line names the one running", "server"),
    Setting("gc_threshold", whole(0, metavar="ALLOCATIONS"), DEFAULT_GC_THRESHOLD,
            "collect young cyclic garbage every N net allocations, after freezing what "
            "start-up made (700, the default, is Python's own and freezes nothing); a full "
            "collection follows every 1000th of the middle generation's, not every 10th "
            "(docs/benchmarks.md)", "server",
            zero="never automatically"),
    Setting("workers", whole(1), 1,
            "run N server processes on the same ports, supervised (needs --redis and fixed "
            "ports)", "workers"),
    Setting("teams", TEAM_MODES, {},
            "per team: auto (real if its key is set), real (refuse to start without the "
            "key) or simulated", "teams"),
    *_provider_settings(),
    Setting("jwt_secret", TEXT, "",
            "HS256 secret (32+ bytes) for tokens; turns auth on", "auth", secret=True,
            metavar="SECRET"),
    Setting("jwt_public_key", PATH, "",
            "PEM public key file (RSA: RS256, P-256: ES256) for tokens; turns auth on", "auth"),
    Setting("jwt_audience", TEXT, DEFAULT_AUDIENCE, "the aud claim every token must carry",
            "auth"),
    Setting("jwt_issuer", TEXT, DEFAULT_ISSUER, "the iss claim every token must carry", "auth"),
    Setting("insecure", SWITCH, False,
            "allow serving a non-loopback --host without authentication", "auth"),
    Setting("allowed_origin", TEXT, (),
            "browser Origin allowed on the WebSocket besides the server's own "
            "(e.g. https://app.example.com; * = any)", "auth", repeat=True, metavar="ORIGIN"),
    Setting("allowed_host", TEXT, (),
            "Host name the HTTP/WebSocket and metrics ports answer to besides the bound "
            "address (and localhost on loopback); others get 421 (DNS rebinding guard); "
            "* = any", "auth", repeat=True, metavar="NAME"),
    Setting("tls_cert", PATH, "", "PEM certificate chain: TLS on both ports (with --tls-key)",
            "auth"),
    Setting("tls_key", PATH, "", "PEM private key of --tls-cert", "auth"),
    Setting("max_brief_chars", whole(1), MAX_BRIEF_CHARS,
            "characters in a brief (INVALID_ARGUMENT)", "limits"),
    Setting("max_request_bytes", whole(1), MAX_MESSAGE_BYTES,
            "bytes in one gRPC request (RESOURCE_EXHAUSTED)", "limits"),
    Setting("max_frame_bytes", whole(1), MAX_CLIENT_FRAME,
            "bytes in one WebSocket client frame (close 1009)", "limits"),
    Setting("max_subscribers_per_job", whole(1), DEFAULT_MAX_SUBSCRIBERS_PER_JOB,
            "WebSocket and gRPC stream subscribers of one job (HTTP 429, RESOURCE_EXHAUSTED)",
            "limits"),
    Setting("max_subscribers_per_address", whole(1), DEFAULT_MAX_SUBSCRIBERS_PER_ADDRESS,
            "subscribers from one client address (HTTP 429, RESOURCE_EXHAUSTED)", "limits"),
    Setting("max_jobs_per_caller", whole(1), DEFAULT_MAX_JOBS_PER_CALLER,
            "running jobs per token sub, per client address without auth "
            "(RESOURCE_EXHAUSTED)", "limits"),
    Setting("metrics_port", PORT, DEFAULT_METRICS_PORT,
            "port of the metrics listener; when this default is taken the server runs "
            "without metrics and says so, a port given must be free", "metrics",
            zero="any free port"),
    Setting("metrics_host", TEXT, LOOPBACK, "address of the metrics listener", "metrics",
            metavar="ADDRESS"),
    Setting("no_metrics", SWITCH, False, "no metrics listener", "metrics"),
)
BY_NAME: Mapping[str, Setting] = {s.name: s for s in SETTINGS}


def table(groups: Iterable[Group]) -> tuple[Setting, ...]:
    chosen = set(groups)
    return tuple(s for s in SETTINGS if s.group in chosen)


# -- flags --------------------------------------------------------------------


def add_flags(parser: argparse.ArgumentParser, settings: Sequence[Setting]) -> None:
    """The settings' flags, in their groups, and ``--config``. A flag not given
    leaves no attribute (``SUPPRESS``), so :func:`given` knows what the command
    line said."""
    parser.add_argument(
        "--config", dest="config_path", metavar="FILE", default=None,
        help=f"TOML file of settings: top-level keys named like the flags with _ "
        f"(job_deadline = 300); default ${CONFIG_ENV}. A flag beats the environment, "
        "which beats the file",
    )
    groups: dict[Group, argparse._ArgumentGroup] = {}
    for setting in settings:
        if setting.group not in groups:
            groups[setting.group] = parser.add_argument_group(GROUPS[setting.group])
        group = groups[setting.group]
        text = setting.help_text.replace("%", "%%")
        if setting.kind is SWITCH:
            group.add_argument(setting.flag, dest=setting.name, action="store_true",
                               default=argparse.SUPPRESS, help=text)
            continue
        group.add_argument(
            setting.flag, dest=setting.name, type=argument_type(setting.kind, setting.name),
            action="append" if setting.repeat else "store", default=argparse.SUPPRESS,
            metavar=setting.value_name, help=text,
        )


def argument_type(kind: Kind, name: str) -> Callable[[str], Any]:
    """An argparse ``type`` reading ``kind``: argparse says what is wrong with a value
    (``argument --job-deadline: must be 0 or more, not -1``), usage first, exit 2."""

    def parse(text: str) -> Any:
        try:
            return kind.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = name  # argparse names it in a message it makes itself
    return parse


def given(args: argparse.Namespace, settings: Sequence[Setting]) -> dict[str, Any]:
    """The settings the command line gave (their flags' values)."""
    out = {}
    for setting in settings:
        if hasattr(args, setting.name):
            value = getattr(args, setting.name)
            out[setting.name] = tuple(value) if setting.repeat else value
    return out


# -- resolving: flag > environment > file > default ---------------------------


@dataclass(frozen=True, slots=True)
class Source:
    """Where a value came from: ``kind`` and the flag, variable or file that gave it."""

    kind: Literal["flag", "env", "file", "default"]
    name: str = ""

    def __str__(self) -> str:
        return f"{self.kind} {self.name}" if self.name else self.kind


@dataclass(frozen=True, slots=True)
class Settings:
    """The effective value of each setting of a command, and its source."""

    values: Mapping[str, Any]
    sources: Mapping[str, Source] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def __contains__(self, name: str) -> bool:
        return name in self.values


def resolve(
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    *,
    config_path: str | None = None,
    settings: Sequence[Setting] = SETTINGS,
    defaults: Mapping[str, Any] | None = None,
) -> Settings:
    """Each of ``settings`` from the first of: ``flags`` (:func:`given`),
    ``environ``, the TOML file (``config_path``, else ``$CHIMERA_CONFIG``), its
    default (``defaults`` may replace some, as ``demo``'s ports 0).

    Raises :class:`ConfigError` naming the first unknown ``CHIMERA_`` variable or
    file key, or the first value of the wrong type. A variable set to blanks counts
    as not set. The whole table is known, not only ``settings``: one file or
    environment serves every command."""
    check_environment(environ)
    path = config_path or environ.get(CONFIG_ENV, "").strip() or None
    in_file = read_file(path) if path else {}
    values: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    for setting in settings:
        name = setting.name
        variable = next((v for v in setting.variables if environ.get(v, "").strip()), None)
        if name in flags:
            values[name], sources[name] = flags[name], Source("flag", setting.flag)
        elif variable is not None:
            values[name] = _from_env(setting, variable, environ[variable])
            sources[name] = Source("env", variable)
        elif name in in_file:
            values[name], sources[name] = in_file[name], Source("file", str(path))
        else:
            values[name] = (defaults or {}).get(name, setting.default)
            sources[name] = Source("default")
    return Settings(values, sources)


def check_environment(environ: Mapping[str, str]) -> None:
    """Refuses a ``CHIMERA_`` variable that names no setting (a typo would
    otherwise be ignored). Other variables are not Chimera's to judge."""
    known = {v for s in SETTINGS for v in s.variables} | {CONFIG_ENV} | set(OTHER_ENV)
    for name in sorted(environ):
        if name.startswith(PREFIX) and name not in known:
            raise ConfigError(
                f"unknown environment variable {name}: no setting has that name"
                f"{_did_you_mean(name, known)} (chimera serve --help lists them)"
            )


def _from_env(setting: Setting, variable: str, text: str) -> Any:
    try:
        if setting.repeat:
            return tuple(setting.kind.parse(item) for item in text.split(",") if item.strip())
        return setting.kind.parse(text)
    except ValueError as exc:
        raise ConfigError(f"{variable}: {exc}") from None


def read_file(path: str) -> dict[str, Any]:
    """The settings a TOML file sets, checked: every key a setting, every value
    of its type."""
    import tomllib  # only with --config: not on a plain start (tests/test_startup.py)

    try:
        with Path(path).open("rb") as file:
            document = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"cannot read --config {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    values = {}
    for key, value in document.items():
        setting = BY_NAME.get(key)
        if setting is None:
            raise ConfigError(
                f"{path}: unknown setting {key!r}{_did_you_mean(key, BY_NAME)} "
                "(keys are the flags' names with _, e.g. job_deadline)"
            )
        try:
            if setting.repeat:
                if not isinstance(value, list):
                    raise ValueError(
                        f"must be an array, e.g. {key} = [\"...\"], not {value!r} "
                        f"({_toml_type(value)})"
                    )
                values[key] = tuple(setting.kind.read(item) for item in value)
            else:
                values[key] = setting.kind.read(value)
        except ValueError as exc:
            raise ConfigError(f"{path}: {key}: {exc}") from None
    return values


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    import difflib  # only for a mistake

    close = difflib.get_close_matches(name.replace("-", "_").lower(), list(known), n=1)
    if not close:
        close = difflib.get_close_matches(name.replace("-", "_").upper(), list(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


# -- the server's configuration ----------------------------------------------

# Settings that are ServerConfig fields of the same name and meaning.
_SAME = frozenset(s.name for s in SETTINGS) & {f.name for f in fields(ServerConfig)} - {
    "job_deadline", "retention", "jwt_public_key", "metrics_port", "metrics_host",
}


def server_config(settings: Settings, **override: Any) -> ServerConfig:
    """The :class:`ServerConfig` the settings make (those a command lacks, such as
    ``demo``'s auth and metrics, keep ServerConfig's defaults)."""
    v = settings.values
    values: dict[str, Any] = {name: v[name] for name in _SAME if name in v}
    if "redis" in v:
        values["redis_url"] = v["redis"]
    if "sim_fail" in v:
        values["sim_fail"] = frozenset(v["sim_fail"])
    if "job_deadline" in v:
        values["job_deadline"] = v["job_deadline"] or None  # 0: no limit
    if "retention" in v:
        values["retention"] = v["retention"] or None  # 0: no limit
    if "teams" in v:
        values["providers"] = ProviderSettings(
            modes=v["teams"],
            options={
                spec.team: {o.name: v[spec.setting_name(o)] for o in spec.settings}
                for spec in PROVIDERS
            },
            api_keys={spec.team: v[f"{spec.team.value}_api_key"] for spec in PROVIDERS},
        )
    if "allowed_origin" in v:
        values["allowed_origins"] = tuple(v["allowed_origin"])
    if "allowed_host" in v:
        values["allowed_hosts"] = tuple(v["allowed_host"])
    if v.get("jwt_public_key"):
        path = v["jwt_public_key"]
        try:
            values["jwt_public_key"] = Path(path).read_text()
        except OSError as exc:
            where = settings.sources.get("jwt_public_key", Source("default"))
            raise ConfigError(
                f"cannot read jwt_public_key {path} ({where}): {exc.strerror or exc}"
            ) from None
    if "no_metrics" in v and not v["no_metrics"]:
        values.update(
            metrics_port=v["metrics_port"],
            # Not asked for: if that port is taken, run without metrics (logged).
            metrics_port_default=settings.sources["metrics_port"].kind == "default",
            metrics_host=v["metrics_host"],
        )
    values.update(override)
    return ServerConfig(**values)


# -- showing them --------------------------------------------------------------


def plain(value: Any) -> Any:
    """``value`` as JSON holds it (enums by their value, tuples as lists)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    return value


def effective(settings: Settings) -> dict[str, dict[str, Any]]:
    """``chimera config --json``: each setting's value (secrets masked) and source."""
    out = {}
    for name, value in settings.values.items():
        setting, source = BY_NAME[name], settings.sources[name]
        shown: Any = plain(value)
        if value and setting.secret:
            shown = MASK
        elif value and setting.redact is not None:
            shown = setting.redact(value)
        out[name] = {"value": shown, "source": source.kind, "from": source.name}
    return out


def markdown() -> str:
    """The README's settings table: one table per group, every setting's file
    key, flag, variables, default and meaning."""
    lines = []
    for group, title in GROUPS.items():
        lines += [f"**{title[0].upper()}{title[1:]}**", "",
                  "| file key | flag | environment | default | meaning |",
                  "| --- | --- | --- | --- | --- |"]
        for s in table([group]):
            flag = f"`{s.flag}{' ' + s.value_name if s.value_name else ''}`"
            env = ", ".join(f"`{v}`" for v in s.variables)
            meaning = s.help
            if s.zero:
                meaning += f"; 0 = {s.zero}"
            if s.kind.bound:
                meaning += f"; {s.kind.bound}"
            if s.repeat:
                meaning += "; repeatable (a TOML array, a comma-separated variable)"
            if s.secret:
                meaning += "; secret (masked by `chimera config`)"
            cells = [f"`{s.name}`", flag, env, f"`{s.default_text}`", meaning]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"
