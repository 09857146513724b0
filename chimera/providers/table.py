"""The real providers, in one table: what drives the registry and the server settings.

Each :class:`ProviderSpec` names its team, its API key and base URL variables,
where its code lives (imported only when a team runs it: the SDKs take seconds
to import) and its settings, with their defaults; each becomes a server setting
``TEAM_NAME`` (:mod:`chimera.settings`: the flag ``--TEAM-NAME``, the variable
``CHIMERA_TEAM_NAME``, the file key ``TEAM_NAME``), as does the team's API key
(``TEAM_api_key``, also read from the provider's own variables). Adding a
provider is one entry here plus its module (a :class:`RealConfig` subclass and a
provider class). :class:`RealConfig` holds what every provider's config shares:
the key, timeouts, retries, the checks on them and ``from_env``.

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

# Each provider's defaults, read by its module and by the settings table.
ANTHROPIC_MODEL = "claude-sonnet-4-6"
ANTHROPIC_THINKING_BUDGET = 2048
ANTHROPIC_MAX_TOKENS = 8192
GOOGLE_MODEL = "gemini-2.5-flash"
GOOGLE_THINKING_BUDGET = 2048
GOOGLE_MAX_OUTPUT_TOKENS = 8192


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
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, api_key: str = "", **settings: Any
    ) -> Self | None:
        """A config with ``api_key``, or else the key from the first of ``KEY_ENVS``
        set; None if there is neither.

        ``settings`` are passed on as fields; those that are None are left at
        their defaults, so unset settings can be passed straight through (and an
        unset ``base_url`` keeps the SDK's base URL variable working).
        """
        key = api_key.strip() or env.api_key(
            os.environ if environ is None else environ, cls.KEY_ENVS
        )
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
    """One setting of a provider's config that is also a server setting.

    ``default`` None leaves the config's own (for ``base_url``: the SDK's, which
    follows the provider's base URL variable)."""

    name: str  # the config field, e.g. "thinking_budget"
    kind: type[str] | type[int]
    default: str | int | None
    help: str


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

    def setting_name(self, setting: Setting) -> str:
        """The server setting's name: ``anthropic_thinking_budget``."""
        return f"{self.team.value}_{setting.name}"

    def make(
        self, environ: Mapping[str, str], options: Mapping[str, Any], api_key: str = ""
    ) -> Provider | None:
        """The real provider with ``options`` and ``api_key`` (else the key from
        ``environ``), or None without a key."""
        module = importlib.import_module(self.module)
        config = module.Config.from_env(environ, api_key=api_key, **options)
        provider: Provider | None = module.Provider(config) if config else None
        return provider


PROVIDERS: tuple[ProviderSpec, ...] = (
    ProviderSpec(
        team=TeamName.ANTHROPIC,
        key_envs=(env.ANTHROPIC_API_KEY_ENV,),
        base_url_env=env.ANTHROPIC_BASE_URL_ENV,
        module="chimera.providers.anthropic",
        settings=(
            Setting("model", str, ANTHROPIC_MODEL, "the Anthropic team's model"),
            Setting("base_url", str, None, "the Anthropic API's address"),
            Setting("thinking_budget", int, ANTHROPIC_THINKING_BUDGET,
                    "thinking tokens (at least 1024)"),
            Setting("max_tokens", int, ANTHROPIC_MAX_TOKENS,
                    "answer + thinking tokens (more than the thinking budget)"),
        ),
    ),
    ProviderSpec(
        team=TeamName.GOOGLE,
        key_envs=env.GOOGLE_API_KEY_ENVS,
        base_url_env=env.GOOGLE_BASE_URL_ENV,
        module="chimera.providers.google",
        settings=(
            Setting("model", str, GOOGLE_MODEL, "the Google team's model"),
            Setting("base_url", str, None, "the Gemini API's address"),
            Setting("thinking_budget", int, GOOGLE_THINKING_BUDGET, "thinking tokens"),
            Setting("max_output_tokens", int, GOOGLE_MAX_OUTPUT_TOKENS,
                    "answer + thinking tokens"),
        ),
    ),
)

SPECS: Mapping[TeamName, ProviderSpec] = {spec.team: spec for spec in PROVIDERS}
