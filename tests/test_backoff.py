"""The one back-off policy (``chimera.backoff``): growth, cap, jitter, endless outages."""

from __future__ import annotations

from itertools import islice

import pytest

from chimera.backoff import Backoff
from chimera.providers.retry import RetryPolicy


def test_pauses_double_up_to_the_cap() -> None:
    exact = Backoff(first=0.05, cap=1.0, jitter=0)
    assert list(islice(exact.delays(), 7)) == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert list(islice(Backoff(first=0.5, cap=0.5, factor=1, jitter=0).delays(), 3)) == [0.5] * 3


def test_jitter_takes_off_at_most_its_share() -> None:
    backoff = Backoff(first=1.0, cap=8.0)  # jitter 0.5: each pause in [nominal / 2, nominal]
    for _ in range(200):
        pauses = list(islice(backoff.delays(), 5))
        for pause, nominal in zip(pauses, (1.0, 2.0, 4.0, 8.0, 8.0), strict=True):
            assert nominal / 2 <= pause <= nominal
    assert len({backoff.delay(1) for _ in range(50)}) > 1  # not all the same instant


def test_an_endless_outage_stays_at_the_cap() -> None:
    assert Backoff(first=0.05, cap=1.0, jitter=0).delay(5000) == 1.0  # 2**4999 overflows


def test_bad_policies_are_refused() -> None:
    for bad in ({"first": -1, "cap": 1}, {"first": 1, "cap": -1}, {"first": 1, "cap": 1,
                "factor": 0.5}, {"first": 1, "cap": 1, "jitter": 1.5}):
        with pytest.raises(ValueError):
            Backoff(**bad)


def test_provider_retries_take_the_default_pause_from_it_and_honour_retry_after() -> None:
    policy = RetryPolicy(backoff_base=1.0, backoff_max=5.0)
    assert policy.backoff == Backoff(first=1.0, cap=5.0)
    assert 2.0 <= policy.delay(3, None) <= 4.0
    assert policy.delay(3, 7.5) == 7.5
