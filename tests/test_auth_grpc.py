"""Tokens on the gRPC plane: grpcurl with and without a bearer token, scopes, per-job access."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from chimera.client import JobsClient
from chimera.v1 import jobs_pb2 as pb
from tests.conftest import Running, StartServer, grpcurl
from tests.security import SECRET, hs256_by_hand, pem_public, token

SERVICE = "chimera.v1.JobService"


@pytest.fixture
async def secured(start_server: StartServer) -> Running:
    return await start_server(jwt_secret=SECRET)


async def call(
    server: Running, method: str, data: Any, bearer: str | None = None
) -> tuple[int, Any, str]:
    code, out, err = await grpcurl(
        server.grpc_target, f"{SERVICE}/{method}", data=data, token=bearer
    )
    body = json.loads(out) if code == 0 and out.strip() and method != "StreamJobEvents" else out
    return code, body, err


async def test_grpcurl_without_a_token_is_unauthenticated(secured: Running) -> None:
    for method, data in (
        ("CreateJob", {"brief": "a counter"}),
        ("GetJob", {"job_id": "x"}),
        ("ListJobs", {}),
        ("CancelJob", {"job_id": "x"}),
        ("StreamJobEvents", {"job_id": "x"}),
    ):
        code, _, err = await call(secured, method, data)
        assert code != 0, method
        assert "Unauthenticated" in err and "requires a token" in err, (method, err)
    # Nothing was created by the refused calls.
    code, listed, err = await call(secured, "ListJobs", {}, token(all_jobs=True))
    assert code == 0, err
    assert listed.get("jobs", []) == []


async def test_reflection_and_health_stay_open(secured: Running) -> None:
    code, out, err = await grpcurl(secured.grpc_target, "list")
    assert code == 0, err
    assert SERVICE in out.split()
    code, out, err = await grpcurl(secured.grpc_target, "describe", SERVICE)
    assert code == 0 and "rpc CreateJob" in out, err
    code, out, err = await grpcurl(secured.grpc_target, "grpc.health.v1.Health/Check", data={})
    assert code == 0 and json.loads(out)["status"] == "SERVING", err


async def test_grpcurl_with_a_bearer_token_creates_streams_gets_and_cancels(
    secured: Running,
) -> None:
    alice = token("alice")
    code, created, err = await call(secured, "CreateJob", {"brief": "a counter"}, alice)
    assert code == 0, err
    job_id = created["job"]["job_id"]
    code, out, err = await call(secured, "StreamJobEvents", {"job_id": job_id}, alice)
    assert code == 0 and '"succeeded"' in out, err
    code, got, err = await call(secured, "GetJob", {"job_id": job_id}, alice)
    assert code == 0 and got["job"]["state"] == "JOB_STATE_SUCCEEDED", err
    code, _, err = await call(secured, "CancelJob", {"job_id": job_id}, alice)
    assert code != 0 and "FailedPrecondition" in err  # finished: the token was accepted


@pytest.mark.parametrize(
    ("make", "text"),
    [
        (lambda: token(now=time.time() - 7200, ttl=60), "expired"),
        (lambda: token(key="another-secret-that-is-also-long-enough-000"), "signature"),
        (lambda: token(audience="someone-else"), "audience"),
        (lambda: token(issuer="someone-else"), "issuer"),
        (lambda: "not.a.token", "invalid"),
        (lambda: "", "Bearer TOKEN"),
    ],
)
async def test_bad_tokens_are_refused_with_the_reason(
    secured: Running, make: Any, text: str
) -> None:
    code, _, err = await call(secured, "ListJobs", {}, make())
    assert code != 0
    assert "Unauthenticated" in err and text in err, err


async def test_token_never_echoed_in_errors(secured: Running) -> None:
    bad = token(key="another-secret-that-is-also-long-enough-000")
    code, _, err = await call(secured, "ListJobs", {}, bad)
    assert code != 0 and bad not in err and bad.split(".")[2] not in err


async def test_scopes_are_enforced(secured: Running) -> None:
    reader = token("alice", "read")
    code, _, err = await call(secured, "CreateJob", {"brief": "a counter"}, reader)
    assert code != 0 and "PermissionDenied" in err and "'submit' scope" in err
    submitter = token("alice", "submit")
    code, created, err = await call(secured, "CreateJob", {"brief": "a counter"}, submitter)
    assert code == 0, err
    job_id = created["job"]["job_id"]
    code, _, err = await call(secured, "GetJob", {"job_id": job_id}, submitter)
    assert code != 0 and "PermissionDenied" in err and "'read' scope" in err
    code, _, err = await call(secured, "CancelJob", {"job_id": job_id}, reader)
    assert code != 0 and "PermissionDenied" in err and "'cancel' scope" in err
    # A caller who may not list learns only that, whatever else is wrong with the call.
    for bad in ({"page_token": "nope"}, {"page_size": 1000}):
        code, _, err = await call(secured, "ListJobs", bad, submitter)
        assert code != 0 and "PermissionDenied" in err and "'read' scope" in err, bad


async def test_a_token_reaches_only_its_own_jobs(secured: Running) -> None:
    async with JobsClient(secured.grpc_target, token=token("alice")) as alice, JobsClient(
        secured.grpc_target, token=token("bob")
    ) as bob, JobsClient(secured.grpc_target, token=token("admin", all_jobs=True)) as admin:
        a = await alice.create("a counter", job_id="alice-job")
        b = await bob.create("a todo list", job_id="bob-job")
        assert [j.job_id for j in (await alice.list()).jobs] == [a.job_id]
        assert [j.job_id for j in (await bob.list()).jobs] == [b.job_id]
        assert [j.job_id for j in (await admin.list()).jobs] == [b.job_id, a.job_id]
        for attempt in (alice.get(b.job_id), alice.cancel(b.job_id)):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await attempt
            # Someone else's job looks exactly like a missing one.
            assert info.value.code() is grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in alice.events(b.job_id):
                pass
        assert info.value.code() is grpc.StatusCode.NOT_FOUND
        # Bob's job kept running untouched, and he can still cancel it.
        assert (await bob.get(b.job_id)).job_id == b.job_id
        assert (await admin.get(a.job_id)).job_id == a.job_id


async def test_request_id_of_another_caller_does_not_return_their_job(secured: Running) -> None:
    async with JobsClient(secured.grpc_target, token=token("alice")) as alice, JobsClient(
        secured.grpc_target, token=token("bob")
    ) as bob:
        alices = await alice.create("a counter", request_id="r-1")
        # Request ids are per caller (issue #8.9): Bob's "r-1" is his own new job.
        bobs = await bob.create("a counter", request_id="r-1")
        assert bobs.job_id != alices.job_id


async def test_a_token_for_one_job(secured: Running) -> None:
    one = token("viewer", job="only-this")
    code, created, err = await call(secured, "CreateJob", {"brief": "a counter"}, one)
    assert code == 0 and created["job"]["job_id"] == "only-this", err
    code, _, err = await call(secured, "CreateJob", {"brief": "x", "job_id": "other"}, one)
    assert code != 0 and "PermissionDenied" in err and "only-this" in err
    async with JobsClient(secured.grpc_target, token=token("bob")) as bob:
        await bob.create("a todo list", job_id="bobs")
    code, _, err = await call(secured, "GetJob", {"job_id": "bobs"}, one)
    assert code != 0 and "PermissionDenied" in err
    code, listed, err = await call(secured, "ListJobs", {}, one)
    assert code == 0 and [j["job_id"] for j in listed["jobs"]] == ["only-this"], err


@pytest.mark.parametrize("kind", ["rsa", "ec"])
async def test_public_key_tokens(start_server: StartServer, kind: str) -> None:
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if kind == "rsa":
        private, algorithm = rsa.generate_private_key(65537, 2048), "RS256"
    else:
        private, algorithm = ec.generate_private_key(ec.SECP256R1()), "ES256"
    server = await start_server(jwt_public_key=pem_public(private))
    good = token("carol", key=private, algorithm=algorithm)
    code, _, err = await call(server, "ListJobs", {}, good)
    assert code == 0, err
    # An HS256 token "signed" with the public key text must not pass (algorithm confusion).
    forged = hs256_by_hand(
        {"sub": "carol", "scope": "read", "aud": "chimera", "iss": "chimera",
         "exp": int(time.time()) + 600},
        pem_public(private).encode(),
    )
    code, _, err = await call(server, "ListJobs", {}, forged)
    assert code != 0 and "Unauthenticated" in err and "algorithm" in err, err



async def test_jobs_from_before_auth_belong_to_nobody(
    start_server: StartServer, tmp_path: Path
) -> None:
    """A database written before jobs had owners (no owner column) still opens; its jobs,
    like jobs made with auth off, are visible only to all-jobs tokens."""
    db = str(tmp_path / "old.db")
    with sqlite3.connect(db) as conn:  # the schema before owners existed
        conn.executescript(
            "CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL "
            "UNIQUE, request_id TEXT UNIQUE, state TEXT NOT NULL, end_time TEXT, "
            "snapshot TEXT NOT NULL);"
        )
    conn.close()
    open_server = await start_server(db=db)
    async with open_server.client() as client:
        job = await client.create("made with auth off", job_id="old-job")
        async for _ in client.events(job.job_id):
            pass
    await open_server.stop()
    secured = await start_server(db=db, jwt_secret=SECRET)
    async with JobsClient(secured.grpc_target, token=token("alice")) as alice, JobsClient(
        secured.grpc_target, token=token("admin", all_jobs=True)
    ) as admin:
        assert list((await alice.list()).jobs) == []
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await alice.get("old-job")
        assert info.value.code() is grpc.StatusCode.NOT_FOUND
        assert [j.job_id for j in (await admin.list()).jobs] == ["old-job"]
        assert (await admin.get("old-job")).state == pb.JOB_STATE_SUCCEEDED
