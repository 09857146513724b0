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
from typing import Any, Protocol, cast

from chimera.defaults import DEFAULT_SIM_DELAY
from chimera.events import TeamName
from chimera.providers import env as names
from chimera.providers.base import Provider
from chimera.providers.simulated import SimulatedProvider
from chimera.providers.table import SPECS


class Mode(StrEnum):
    AUTO = "auto"
    REAL = "real"
    SIMULATED = "simulated"


class RealProvider(Provider, Protocol):
    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    """What the settings say. ``options[team]`` holds that team's settings by name
    (see :data:`chimera.providers.table.PROVIDERS`); ``None`` or a missing name
    leaves a value to the environment or the default. ``api_keys[team]``: the
    team's key; missing or empty, the provider's key variables decide (kept out of
    ``repr``)."""

    modes: Mapping[TeamName, Mode] = field(default_factory=dict)
    options: Mapping[TeamName, Mapping[str, Any]] = field(default_factory=dict)
    api_keys: Mapping[TeamName, str] = field(default_factory=dict, repr=False)


class Providers:
    """One provider per team for the server's life; call it with a team to get it."""

    def __init__(
        self,
        settings: ProviderSettings,
        *,
        sim_delay: float = DEFAULT_SIM_DELAY,
        sim_fail: frozenset[TeamName] = frozenset(),
        environ: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self._providers: dict[TeamName, Provider] = {}
        self._real: list[RealProvider] = []
        self.descriptions: dict[TeamName, str] = {}
        for team in TeamName:
            spec = SPECS[team]
            options = settings.options.get(team, {})
            mode = settings.modes.get(team, Mode.AUTO)
            key = settings.api_keys.get(team, "").strip() or names.api_key(env, spec.key_envs)
            wanted = mode is not Mode.SIMULATED and bool(key)
            real = cast(RealProvider | None, spec.make(env, options, key)) if wanted else None
            if mode is Mode.REAL and real is None:
                raise ValueError(
                    f"the {team.value} team is set to real but {spec.key_help} is not set"
                )
            if real is not None:
                self._real.append(real)
                self._providers[team] = real
                # The base URL in force when it is not the provider's own (flag, then SDK variable).
                url = options.get("base_url") or env.get(spec.base_url_env)
                self.descriptions[team] = f"real ({real.model}{f' via {url}' if url else ''})"
            else:
                fail = f"simulated failure of the {team.value} team" if team in sim_fail else None
                self._providers[team] = SimulatedProvider(
                    team.value, delay=sim_delay, fail_with=fail
                )
                why = "as asked" if mode is Mode.SIMULATED else f"{spec.key_help} not set"
                self.descriptions[team] = f"simulated ({why})"

    def __call__(self, team: TeamName) -> Provider:
        return self._providers[team]

    async def aclose(self) -> None:
        """Closes the real providers' connection pools (after every job has stopped)."""
        for provider in self._real:
            await provider.aclose()
