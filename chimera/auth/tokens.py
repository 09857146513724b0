"""Signed tokens (JWT): verifying them into a :class:`chimera.auth.principal.Principal`,
and minting them (``chimera token``).

A Chimera token carries these claims::

    sub       who the caller is; the owner of the jobs it creates     (required)
    scope     space-separated scopes: submit, read, cancel           (required)
    job       the token is good for this one job id only             (optional)
    all_jobs  true: read/cancel any job, not only the ones ``sub`` created (optional)
    exp, aud, iss                                                    (required, checked)

Without ``job`` or ``all_jobs`` a token reaches only its own jobs (secure by
default). HS256 tokens are verified with a shared secret; RS256 and ES256 with a
public key (the algorithm follows the key's type, so a public key can never be
used as an HMAC secret). PyJWT's exceptions become
:class:`chimera.errors.Unauthenticated` here, at the one boundary that meets
them; no message ever contains the token.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from chimera.auth.principal import ANONYMOUS, Principal, Scope, parse_scopes
from chimera.errors import ConfigError, Unauthenticated
from chimera.ids import is_valid_job_id

# PyJWT and cryptography (~45 ms to import) are imported where a token is made or
# checked: a server without auth never needs them (tests/test_startup.py).
if TYPE_CHECKING:
    import jwt

DEFAULT_AUDIENCE = "chimera"
DEFAULT_ISSUER = "chimera"
DEFAULT_TTL = 3600.0
MIN_SECRET_BYTES = 32
MAX_TOKEN_CHARS = 8192
MAX_SUB_CHARS = 256
# Clocks of the minting and verifying machines may differ a little.
LEEWAY_SECONDS = 30


class TokenVerifier:
    """Checks a token's signature, ``exp``, ``aud`` and ``iss``; returns its :class:`Principal`."""

    def __init__(
        self, key: Any, algorithms: list[str], *, audience: str, issuer: str
    ) -> None:
        self._key = key
        self._algorithms = algorithms
        self.audience = audience
        self.issuer = issuer

    @classmethod
    def from_secret(
        cls, secret: str, *, audience: str = DEFAULT_AUDIENCE, issuer: str = DEFAULT_ISSUER
    ) -> TokenVerifier:
        check_secret(secret)
        return cls(secret.encode(), ["HS256"], audience=audience, issuer=issuer)

    @classmethod
    def from_public_key(
        cls, pem: bytes, *, audience: str = DEFAULT_AUDIENCE, issuer: str = DEFAULT_ISSUER
    ) -> TokenVerifier:
        from cryptography.hazmat.primitives.asymmetric import ec, rsa
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        try:
            key = load_pem_public_key(pem)
        except ValueError as exc:
            raise ConfigError(f"--jwt-public-key is not a PEM public key: {exc}") from exc
        if isinstance(key, rsa.RSAPublicKey):
            algorithms = ["RS256"]
        elif isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
            algorithms = ["ES256"]
        else:
            raise ConfigError("--jwt-public-key must be an RSA key (RS256) or a P-256 key (ES256)")
        return cls(key, algorithms, audience=audience, issuer=issuer)

    def verify(self, token: str) -> Principal:
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise Unauthenticated(
                f"the token is empty or longer than {MAX_TOKEN_CHARS} characters"
            )
        import jwt

        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "sub", "aud", "iss"]},
            )
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(self._refusal(exc)) from exc
        return principal_from_claims(claims)

    def _refusal(self, error: jwt.InvalidTokenError) -> str:
        """What is wrong with the token, as PyJWT found it, most specific class first."""
        import jwt

        match error:
            case jwt.ExpiredSignatureError():
                return "the token has expired: mint a new one"
            case jwt.InvalidSignatureError():
                return "the token's signature is invalid: it was not signed with this server's key"
            case jwt.InvalidAudienceError():
                return f"the token's audience (aud) is wrong: this server wants {self.audience!r}"
            case jwt.InvalidIssuerError():
                return f"the token's issuer (iss) is wrong: this server wants {self.issuer!r}"
            case jwt.MissingRequiredClaimError():
                return f"the token has no {error.claim!r} claim"
            case jwt.InvalidAlgorithmError():
                return f"the token's algorithm is not accepted: use {', '.join(self._algorithms)}"
            case _:
                # DecodeError, ImmatureSignatureError, ...: PyJWT's message names the
                # problem and never includes the token itself.
                return f"the token is invalid: {error}"


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > MAX_SUB_CHARS:
        raise Unauthenticated(f"the token's sub must be 1 to {MAX_SUB_CHARS} characters")
    scope = claims.get("scope")
    if not isinstance(scope, str):
        raise Unauthenticated("the token has no scope claim (space-separated scopes)")
    try:
        scopes = parse_scopes(scope)
    except ValueError as exc:
        raise Unauthenticated(f"the token's scope is invalid: {exc}") from exc
    job = claims.get("job")
    if job is not None and (not isinstance(job, str) or not is_valid_job_id(job)):
        raise Unauthenticated("the token's job claim is not a well-formed job id")
    all_jobs = claims.get("all_jobs", False)
    if not isinstance(all_jobs, bool):
        raise Unauthenticated("the token's all_jobs claim must be true or false")
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise Unauthenticated("the token's exp claim must be a number (seconds since 1970)")
    # Accepted until exp plus the leeway (as verify() does), so ending its streams
    # then means a reconnect with the same token is refused, not let in again.
    try:
        expires_at: datetime | None = datetime.fromtimestamp(exp + LEEWAY_SECONDS, UTC)
    except (OverflowError, ValueError, OSError):
        expires_at = None  # past year 9999: it never expires in practice
    return Principal(sub=sub, scopes=scopes, job=job, all_jobs=all_jobs, expires_at=expires_at)


def check_secret(secret: str) -> None:
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"the JWT secret must be at least {MIN_SECRET_BYTES} bytes: "
            "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )


def mint(
    key: Any,
    *,
    sub: str,
    scopes: Iterable[Scope],
    algorithm: str = "HS256",
    job: str | None = None,
    all_jobs: bool = False,
    ttl: float = DEFAULT_TTL,
    audience: str = DEFAULT_AUDIENCE,
    issuer: str = DEFAULT_ISSUER,
    now: float | None = None,
) -> str:
    """A signed token; ``key`` is the HS256 secret or the RS256/ES256 private key."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "sub": sub,
        "scope": " ".join(sorted(s.value for s in scopes)),
        "iat": issued,
        "exp": issued + int(ttl),
        "aud": audience,
        "iss": issuer,
    }
    if job is not None:
        claims["job"] = job
    if all_jobs:
        claims["all_jobs"] = True
    import jwt

    if isinstance(key, str):
        key = key.encode()
    return jwt.encode(claims, key, algorithm=algorithm)


def bearer(authorization: str) -> str:
    """The token of an ``Authorization: Bearer TOKEN`` value."""
    kind, _, token = authorization.strip().partition(" ")
    if kind.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the authorization value must be 'Bearer TOKEN'")
    return token.strip()


class Authenticator:
    """Turns what a caller presented into a :class:`Principal`.

    With no verifier (auth not configured) every caller is :data:`ANONYMOUS`.
    """

    def __init__(self, verifier: TokenVerifier | None) -> None:
        self.verifier = verifier

    @property
    def enabled(self) -> bool:
        return self.verifier is not None

    def principal(self, token: str | None) -> Principal:
        if self.verifier is None:
            return ANONYMOUS
        if token is None:
            raise Unauthenticated(
                "this server requires a token: send 'authorization: Bearer TOKEN' "
                "(mint one with: chimera token --sub NAME --scope submit,read)"
            )
        return self.verifier.verify(token)
