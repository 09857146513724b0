"""The caller, as the rest of Chimera sees it: who, with which scopes, on which jobs.

Kept apart from :mod:`chimera.auth.tokens` so the actors depend on this value
only, never on the token library.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from chimera.errors import PermissionDenied


class Scope(StrEnum):
    SUBMIT = "submit"
    READ = "read"
    CANCEL = "cancel"


def parse_scopes(text: str) -> frozenset[Scope]:
    """``"submit,read"`` or ``"submit read"`` → scopes; ``ValueError`` names a bad one."""
    scopes = set()
    for word in text.replace(",", " ").split():
        try:
            scopes.add(Scope(word))
        except ValueError:
            known = ", ".join(s.value for s in Scope)
            raise ValueError(f"unknown scope {word!r}: use {known}") from None
    return frozenset(scopes)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling and what they may do; passed explicitly to the job manager."""

    sub: str
    scopes: frozenset[Scope]
    job: str | None = None
    all_jobs: bool = False
    authenticated: bool = True
    # When this server stops accepting the token (its exp plus the clock leeway,
    # UTC): streams it opened end then. None: no token (no auth, or SYSTEM).
    expires_at: datetime | None = None

    def require(self, scope: Scope) -> None:
        if scope not in self.scopes:
            have = ",".join(sorted(s.value for s in self.scopes)) or "none"
            raise PermissionDenied(
                f"this token lacks the {scope.value!r} scope (it has: {have}): "
                f"use a token minted with --scope including {scope.value}"
            )

    def check_job_id(self, job_id: str) -> None:
        """Refuses a job id the token is not limited to (decided from the token alone)."""
        if self.job is not None and job_id != self.job:
            raise PermissionDenied(
                f"this token is limited to job {self.job!r}: it cannot reach job {job_id!r}"
            )

    def may_see(self, job_id: str, owner: str) -> bool:
        """Whether a job (``owner`` created it) is visible to this caller."""
        if self.job is not None:
            return job_id == self.job
        return self.all_jobs or owner == self.sub


# When no auth is configured (loopback only), every caller may do everything.
ANONYMOUS = Principal(sub="", scopes=frozenset(Scope), all_jobs=True, authenticated=False)

# Chimera itself, reading on behalf of a caller already checked (e.g. a gateway
# checking ``since`` after the handshake authorised the subscriber). Never a
# default: every JobManager call names its caller.
SYSTEM = Principal(sub="system", scopes=frozenset(Scope), all_jobs=True, authenticated=False)
