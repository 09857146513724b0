"""Random bits for job and thought ids come from the OS's CSPRNG through a pool
(chimera.ids.random_bytes): one read per 4 KiB, never the same bytes twice, and a
forked child never repeats its parent's."""

from __future__ import annotations

import os
import uuid

import pytest

from chimera import ids
from chimera.events import Draft, TeamName


def test_ids_from_the_pool_are_distinct_well_formed_and_read_the_os_once_per_4_kib(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reads: list[int] = []
    real = os.urandom

    def counted(n: int) -> bytes:
        reads.append(n)
        return real(n)

    monkeypatch.setattr(ids, "_POOL", ids._RandomPool())
    monkeypatch.setattr(os, "urandom", counted)
    job_ids = [ids.new_job_id() for _ in range(2_000)]  # 10 bytes each
    thoughts = [Draft.thought("j", TeamName.ANTHROPIC, "t").data["id"] for _ in range(2_000)]
    assert len(set(job_ids)) == len(job_ids) and len(set(thoughts)) == len(thoughts)
    assert {uuid.UUID(i).version for i in job_ids} == {7}
    assert {(uuid.UUID(t).version, uuid.UUID(t).variant) for t in thoughts} == {
        (4, uuid.RFC_4122)
    }
    used = 2_000 * 10 + 2_000 * 16
    assert reads == [ids.RANDOM_POOL_BYTES] * -(-used // ids.RANDOM_POOL_BYTES), reads
    # A request larger than the pool is served whole, from a read of its own size.
    assert len(ids.random_bytes(ids.RANDOM_POOL_BYTES + 1)) == ids.RANDOM_POOL_BYTES + 1


def test_a_forked_child_never_takes_its_parents_bytes() -> None:
    ids.random_bytes(16)  # the parent's pool holds bytes it has not handed out yet
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        try:
            os.write(write_end, ids.random_bytes(32))
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        childs = pipe.read()
    os.waitpid(child, 0)
    parents = ids.random_bytes(32)
    assert len(childs) == 32
    assert childs != parents
