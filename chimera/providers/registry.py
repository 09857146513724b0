"""Which provider each team runs: real when its key is set, simulated otherwise.

:class:`Providers` is built once per server from :class:`ProviderSettings`
(flags and environment) and owns the real providers' SDK clients until
:meth:`Providers.aclose`. Each team's choice is ``auto`` (real if the key is
set), ``real`` (refuse to start without the key) or ``simulated``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from chimera.events import TeamName
from chimera.providers import env as names
from chimera.providers.base import Provider
from chimera.providers.simulated import DEFAULT_DELAY, SimulatedProvider


class Mode(StrEnum):
    AUTO = "auto"
    REAL = "real"
    SIMULATED = "simulated"


KEY_HELP = {
    TeamName.ANTHROPIC: names.ANTHROPIC_API_KEY_ENV,
    TeamName.GOOGLE: " or ".join(names.GOOGLE_API_KEY_ENVS),
}


class RealProvider(Provider, Protocol):
    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    """What the flags say; ``None`` leaves a value to the environment or the default."""

    modes: Mapping[TeamName, Mode] = field(default_factory=dict)
    anthropic_model: str | None = None
    anthropic_base_url: str | None = None
    anthropic_thinking_budget: int | None = None
    anthropic_max_tokens: int | None = None
    google_model: str | None = None
    google_base_url: str | None = None
    google_thinking_budget: int | None = None
    google_max_output_tokens: int | None = None


class Providers:
    """One provider per team for the server's life; call it with a team to get it."""

    def __init__(
        self,
        settings: ProviderSettings,
        *,
        sim_delay: float = DEFAULT_DELAY,
        sim_fail: frozenset[TeamName] = frozenset(),
        environ: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self._providers: dict[TeamName, Provider] = {}
        self._real: list[RealProvider] = []
        self.descriptions: dict[TeamName, str] = {}
        for team in TeamName:
            mode = settings.modes.get(team, Mode.AUTO)
            wanted = mode is not Mode.SIMULATED and _has_key(team, env)
            real = self._make_real(team, settings, env) if wanted else None
            if mode is Mode.REAL and real is None:
                raise ValueError(
                    f"the {team.value} team is set to real but {KEY_HELP[team]} is not set"
                )
            if real is not None:
                self._real.append(real)
                self._providers[team] = real
                url = _base_url(team, settings, env)
                self.descriptions[team] = f"real ({real.model}{f' via {url}' if url else ''})"
            else:
                fail = f"simulated failure of the {team.value} team" if team in sim_fail else None
                self._providers[team] = SimulatedProvider(
                    team.value, delay=sim_delay, fail_with=fail
                )
                why = "as asked" if mode is Mode.SIMULATED else f"{KEY_HELP[team]} not set"
                self.descriptions[team] = f"simulated ({why})"

    @staticmethod
    def _make_real(
        team: TeamName, s: ProviderSettings, env: Mapping[str, str]
    ) -> RealProvider | None:
        # Imported here: the SDKs take seconds to import, and only real teams need them.
        if team is TeamName.ANTHROPIC:
            from chimera.providers import anthropic as anthropic_provider

            a = anthropic_provider.AnthropicConfig.from_env(
                env, model=s.anthropic_model, base_url=s.anthropic_base_url,
                thinking_budget=s.anthropic_thinking_budget, max_tokens=s.anthropic_max_tokens,
            )
            return anthropic_provider.AnthropicProvider(a) if a else None
        from chimera.providers import google as google_provider

        g = google_provider.GoogleConfig.from_env(
            env, model=s.google_model, base_url=s.google_base_url,
            thinking_budget=s.google_thinking_budget, max_output_tokens=s.google_max_output_tokens,
        )
        return google_provider.GoogleProvider(g) if g else None

    def __call__(self, team: TeamName) -> Provider:
        return self._providers[team]

    async def aclose(self) -> None:
        """Closes the real providers' connection pools (after every job has stopped)."""
        for provider in self._real:
            await provider.aclose()


def _has_key(team: TeamName, env: Mapping[str, str]) -> bool:
    keys = (
        (names.ANTHROPIC_API_KEY_ENV,) if team is TeamName.ANTHROPIC else names.GOOGLE_API_KEY_ENVS
    )
    return bool(names.api_key(env, keys))


def _base_url(team: TeamName, s: ProviderSettings, env: Mapping[str, str]) -> str | None:
    """The base URL in force when it is not the provider's own (flag, then SDK variable)."""
    if team is TeamName.ANTHROPIC:
        return s.anthropic_base_url or env.get(names.ANTHROPIC_BASE_URL_ENV) or None
    return s.google_base_url or env.get(names.GOOGLE_BASE_URL_ENV) or None
