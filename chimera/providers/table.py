"""The real providers, in one table: what drives the registry and the CLI flags.

Each :class:`ProviderSpec` names its team, its API key and base URL variables,
where its code lives (imported only when a team runs it: the SDKs take seconds
to import) and its settings; a setting becomes the flag
``--TEAM-NAME`` with the default ``$CHIMERA_TEAM_NAME``. Adding a provider is
one entry here plus its module (a :class:`RealConfig` subclass and a provider
class). :class:`RealConfig` holds what every provider's config shares: the key,
timeouts, retries, the checks on them and ``from_env``.

Imports no SDK, so the CLI can read it at no cost.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from chimera.events import TeamName
from chimera.providers import env
from chimera.providers.base import Provider
from chimera.providers.retry import RetryPolicy

DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_RETRIES = 3
DEFAULT_BACKOFF_BASE = 1.0


@dataclass(frozen=True, slots=True)
class RealConfig:
    """Settings every real provider has. ``timeout`` (seconds) bounds connecting
    and each read, not the whole answer. ``max_retries`` is the number of
    retries after the first attempt; the n-th waits about
    ``backoff_base * 2**(n-1)`` seconds unless the API says how long. The API
    key is left out of ``repr``. ``base_url`` None leaves the SDK's default in
    place, which honours the provider's base URL variable (``base_url_env`` in
    its :class:`ProviderSpec`)."""

    SOURCE: ClassVar[str] = ""  # the API's name in messages ("Anthropic")
    KEY_ENVS: ClassVar[tuple[str, ...]] = ()

    api_key: str = field(repr=False)
    timeout: float = DEFAULT_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES
    backoff_base: float = DEFAULT_BACKOFF_BASE
    base_url: str | None = None

    def __post_init__(self) -> None:
        if not self.api_key:
            raise ValueError(f"the {self.SOURCE} API key is empty")
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")
        if self.max_retries < 0:
            raise ValueError("max_retries must not be negative")
        self._check()

    def _check(self) -> None:
        """A provider's own checks on its own fields; raises ``ValueError``."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **settings: Any) -> Self | None:
        """A config with the key from the first of ``KEY_ENVS`` set, or None if none is.

        ``settings`` are passed on as fields; those that are None are left at
        their defaults, so unset command-line flags can be passed straight
        through (and an unset ``base_url`` keeps the SDK's base URL variable working).
        """
        key = env.api_key(os.environ if environ is None else environ, cls.KEY_ENVS)
        if not key:
            return None
        given = {name: value for name, value in settings.items() if value is not None}
        return cls(api_key=key, **given)

    @property
    def retry_policy(self) -> RetryPolicy:
        """The policy :func:`~chimera.providers.retry.with_retries` applies for this config."""
        return RetryPolicy(max_attempts=self.max_retries + 1, backoff_base=self.backoff_base)


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting of a provider's config that has a command-line flag."""

    name: str  # the config field, e.g. "thinking_budget"
    kind: type[str] | type[int]
    help: str | None = None
    from_env: bool = True  # default from $CHIMERA_TEAM_NAME


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    team: TeamName
    key_envs: tuple[str, ...]
    base_url_env: str  # read by the SDK itself when no base URL is given
    module: str  # defines ``Config`` (a RealConfig) and ``Provider``
    settings: tuple[Setting, ...]

    @property
    def key_help(self) -> str:
        return " or ".join(self.key_envs)

    def flag(self, setting: Setting) -> str:
        return f"--{self.team.value}-{setting.name.replace('_', '-')}"

    def env_name(self, setting: Setting) -> str:
        return f"CHIMERA_{self.team.value}_{setting.name}".upper()

    def make(self, environ: Mapping[str, str], options: Mapping[str, Any]) -> Provider | None:
        """The real provider with ``options``, or None without a key."""
        module = importlib.import_module(self.module)
        config = module.Config.from_env(environ, **options)
        provider: Provider | None = module.Provider(config) if config else None
        return provider


PROVIDERS: tuple[ProviderSpec, ...] = (
    ProviderSpec(
        team=TeamName.ANTHROPIC,
        key_envs=(env.ANTHROPIC_API_KEY_ENV,),
        base_url_env=env.ANTHROPIC_BASE_URL_ENV,
        module="chimera.providers.anthropic",
        settings=(
            Setting("model", str, "default $CHIMERA_ANTHROPIC_MODEL or claude-sonnet-4-6"),
            Setting("base_url", str, from_env=False),
            Setting("thinking_budget", int, "thinking tokens (>= 1024; default 2048)"),
            Setting("max_tokens", int, "answer + thinking tokens (default 8192)"),
        ),
    ),
    ProviderSpec(
        team=TeamName.GOOGLE,
        key_envs=env.GOOGLE_API_KEY_ENVS,
        base_url_env=env.GOOGLE_BASE_URL_ENV,
        module="chimera.providers.google",
        settings=(
            Setting("model", str, "default $CHIMERA_GOOGLE_MODEL or gemini-2.5-flash"),
            Setting("base_url", str, from_env=False),
            Setting("thinking_budget", int, "thinking tokens (default 2048)"),
            Setting("max_output_tokens", int, "answer + thinking tokens (default 8192)"),
        ),
    ),
)

SPECS: Mapping[TeamName, ProviderSpec] = {spec.team: spec for spec in PROVIDERS}
