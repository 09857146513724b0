"""The judgement of other nodes (chimera.cluster.liveness), on its own clock.

The end-to-end faults that make it matter (a failover pause, a Redis restart, a
FLUSHALL deleting every lease) are in tests/test_redis_faults.py; here each rule
is driven check by check, with the times a real membership tick would see.
"""

from __future__ import annotations

from chimera.cluster.liveness import Liveness

TTL = 3.0


def test_a_node_whose_lease_is_missing_for_a_full_period_is_judged_lost() -> None:
    judge = Liveness(TTL)
    assert judge.judge(0.0, set()) == frozenset()
    assert judge.judge(4.0, {"x"}) == frozenset()  # first seen missing: suspected only
    assert judge.judge(6.9, {"x"}) == frozenset()
    assert judge.judge(7.0, {"x"}) == {"x"}


def test_a_lease_that_comes_back_is_no_evidence_of_death() -> None:
    # FLUSHALL deletes every lease; each live node renews its own within an interval.
    judge = Liveness(TTL)
    judge.judge(0.0, set())
    assert judge.judge(10.0, {"x", "y"}) == frozenset()
    assert judge.judge(11.0, {"y"}) == frozenset()  # x renewed
    assert judge.judge(12.5, {"x", "y"}) == frozenset()  # x missing again: a new count
    assert judge.judge(13.0, {"x", "y"}) == {"y"}
    assert judge.judge(15.4, {"x"}) == frozenset()
    assert judge.judge(15.5, {"x"}) == {"x"}


def test_a_node_that_was_cut_off_judges_nobody_for_a_full_period() -> None:
    # Redis was unreachable (or paused): every lease lapsed meanwhile, this node's
    # too; what it saw before the outage does not count either.
    judge = Liveness(TTL)
    judge.judge(0.0, set())
    judge.judge(5.0, {"x"})
    judge.cut_off()
    assert judge.judge(9.0, {"x", "y"}) == frozenset()  # connected again at 9
    assert judge.judge(11.9, {"x", "y"}) == frozenset()
    assert judge.judge(12.0, {"x", "y"}) == {"x", "y"}  # both still missing at 9 + 3


def test_a_new_node_waits_a_full_period_before_judging() -> None:
    judge = Liveness(TTL)
    assert judge.judge(100.0, {"x"}) == frozenset()
    assert judge.judge(102.0, {"x"}) == frozenset()
    assert judge.judge(103.0, {"x"}) == {"x"}
