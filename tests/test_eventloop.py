"""The event loop: ``chimera serve`` runs on uvloop where installed, or on asyncio's
own loop (``--loop asyncio``, the loop the in-process tests run on); both serve
gRPC and WebSocket alike. And the collector's pace it serves at (``--gc-threshold``)."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from chimera import eventloop, gcpace
from chimera.defaults import DEFAULT_GC_THRESHOLD
from chimera.errors import ConfigError
from tests.conftest import job_events, read_until_closed, ws_connect
from tests.processes import chimera_serve, read_text


async def _kind() -> str:
    return eventloop.running_loop()


@pytest.mark.parametrize(("choice", "runs"), [
    ("asyncio", "asyncio"), ("uvloop", "uvloop"), ("auto", "uvloop"),
])
def test_run_starts_the_loop_asked_for(choice: str, runs: str) -> None:
    assert eventloop.run(_kind(), choice) == runs


def test_an_unknown_loop_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown event loop 'trio'"):
        eventloop.run(_kind(), "trio")


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
async def test_serve_streams_a_job_on_either_loop(tmp_path: Path, loop: str) -> None:
    log = tmp_path / "serve.log"
    async with chimera_serve(tmp_path / "c.db", log, "--loop", loop, "--sim-delay", "0") as node:
        thresholds = f"{DEFAULT_GC_THRESHOLD}/10/{gcpace.FULL_EVERY}"
        assert f"(event loop: {loop}, gc thresholds: {thresholds})" in read_text(log)
        async with node.client() as client:
            await client.create("Create a login form", job_id="looped")
            grpc_seqs = [e.sequence async for e in client.events("looped", 0)]
        ws = await ws_connect(node.ws_url("looped"))
        frames = job_events(await read_until_closed(ws))
        assert ws.close_code == 1000
        assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1)) == grpc_seqs
        assert frames[-1]["data"] == {"status": "succeeded"}


async def test_serve_paces_the_collector_as_asked(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    async with chimera_serve(tmp_path / "c.db", log, "--gc-threshold", "2500",
                             "--sim-delay", "0") as node:
        assert f"gc thresholds: 2500/10/{gcpace.FULL_EVERY})" in read_text(log)
        async with node.client() as client:  # and it serves
            await client.create("Create a login form", job_id="paced")
            assert [e.sequence async for e in client.events("paced", 0)][-1] > 3


def test_pace_freezes_what_exists_and_sets_the_young_threshold() -> None:
    before = gc.get_threshold()
    try:
        gcpace.pace(12_345)
        assert gc.get_threshold() == (12_345, before[1], gcpace.FULL_EVERY)
        assert gc.get_freeze_count() > 1000  # the imported modules, at least
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_pythons_young_pace_freezes_nothing_and_spaces_full_collections() -> None:
    before = gc.get_threshold()
    try:
        gcpace.pace(gcpace.PYTHONS_THRESHOLD)
        assert gc.get_threshold() == (700, before[1], gcpace.FULL_EVERY)
        assert gcpace.thresholds() == f"700/{before[1]}/{gcpace.FULL_EVERY}"
        assert gc.get_freeze_count() == 0
    finally:
        gc.set_threshold(*before)
