"""A gRPC call's principal is decided once: its token is verified by the interceptor,
and the servicer uses what the interceptor decided (it does not verify again).

The verifier here accepts each token once (as a deployment might, against replay):
a call whose token were verified twice would be refused by its own second look.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from chimera.auth.principal import Principal
from chimera.auth.tokens import DEFAULT_AUDIENCE, DEFAULT_ISSUER, Authenticator, TokenVerifier
from chimera.client import JobsClient
from chimera.config import ServerConfig
from chimera.errors import Unauthenticated
from chimera.events import TeamName
from chimera.providers.registry import Mode, ProviderSettings
from chimera.server import ChimeraServer
from chimera.v1 import jobs_pb2 as pb
from tests.conftest import Running
from tests.security import SECRET, token


class OneTimeTokens(TokenVerifier):
    """A real verifier (signature, exp, aud, iss) that also refuses a token seen before."""

    def __init__(self, key: Any, algorithms: list[str], *, audience: str, issuer: str) -> None:
        super().__init__(key, algorithms, audience=audience, issuer=issuer)
        self.seen: set[str] = set()

    def verify(self, token: str) -> Principal:
        if token in self.seen:
            raise Unauthenticated("this token was already used: mint a new one")
        self.seen.add(token)
        return super().verify(token)


@pytest.fixture
async def one_time(tmp_path: Path) -> AsyncIterator[tuple[Running, OneTimeTokens]]:
    verifier = OneTimeTokens(
        SECRET.encode(), ["HS256"], audience=DEFAULT_AUDIENCE, issuer=DEFAULT_ISSUER
    )
    config = ServerConfig(
        grpc_port=0, ws_port=0, db=str(tmp_path / "chimera.db"), sim_delay=0.01,
        shutdown_grace=1.0, jwt_secret=SECRET,
        providers=ProviderSettings(modes=dict.fromkeys(TeamName, Mode.SIMULATED)),
    )
    server = ChimeraServer(config, auth=Authenticator(verifier))
    task = asyncio.create_task(server.serve())
    ready = asyncio.create_task(server.ready.wait())
    await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    running = Running(server, task)
    yield running, verifier
    await running.stop()


def fresh(n: int) -> str:
    """A token unlike any other minted in the same second (its exp differs)."""
    return token(all_jobs=True, ttl=3600 + n)


async def test_each_call_verifies_its_token_once(
    one_time: tuple[Running, OneTimeTokens],
) -> None:
    server, verifier = one_time
    target = server.grpc_target
    async with JobsClient(target, token=fresh(1)) as client:
        created = await client.create("a counter", job_id="once")
    assert created.job_id == "once"
    async with JobsClient(target, token=fresh(2)) as client:
        events = [e async for e in client.events("once")]  # the stream, to its end
    assert [e.sequence for e in events] == list(range(1, len(events) + 1)) and len(events) > 3
    used = fresh(3)
    async with JobsClient(target, token=used) as client:
        assert (await client.get("once")).state == pb.JOB_STATE_SUCCEEDED
    async with JobsClient(target, token=fresh(4)) as client:
        assert [j.job_id for j in (await client.list()).jobs] == ["once"]
    async with JobsClient(target, token=fresh(5)) as client:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.cancel("once")  # the servicer's answer: the call got that far
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert len(verifier.seen) == 5

    # The verifier is the one in force: a token used before is refused (the same
    # string: minted again a second later, fresh(3) would be another token).
    async with JobsClient(target, token=used) as client:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.get("once")
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "already used" in str(caught.value.details())
