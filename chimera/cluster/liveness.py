"""Which other nodes this one may judge lost: liveness judged fairly.

A node whose lease is missing is only *suspected*: the lease also lapses while
Redis is unreachable, paused (``CLIENT PAUSE`` during a managed failover), out
of memory or restarting, and a FLUSHALL deletes every lease at once, while every
node is alive. So a node is judged lost (its running jobs taken over as
``interrupted: node lost``) only when both hold:

- this node has itself been connected, answered promptly, for at least a full
  lease period: a node that was cut off (or paused) judges nobody until every
  live node has had a full period to renew its lease after the same outage;
- the suspect's lease has been missing in every check for at least a full lease
  period, observed while this node was connected: a live node renews within one
  interval, so a lease deleted (not expired) comes back long before that.

The take-over itself is one atomic step in Redis
(:meth:`chimera.store.redis.RedisStore.unfinished_jobs`), which checks again that
the job still runs, is still the lost node's, under the current epoch.

Pure bookkeeping on a monotonic clock, driven by
:class:`chimera.cluster.membership.Membership` once per check.
"""

from __future__ import annotations


class Liveness:
    def __init__(self, ttl: float) -> None:
        self._ttl = ttl
        self._connected_since: float | None = None
        self._missing_since: dict[str, float] = {}

    def cut_off(self) -> None:
        """This node could not reach Redis promptly: it judges nobody until it has
        been connected again for a full lease period, and what it saw before does
        not count."""
        self._connected_since = None
        self._missing_since.clear()

    def judge(self, now: float, lapsed: set[str]) -> frozenset[str]:
        """After a prompt check at ``now`` that found ``lapsed`` (nodes with running
        jobs and no lease): the nodes judged lost."""
        if self._connected_since is None:
            self._connected_since = now
        for node in list(self._missing_since):
            if node not in lapsed:  # renewed: alive after all
                del self._missing_since[node]
        for node in lapsed:
            self._missing_since.setdefault(node, now)
        if now - self._connected_since < self._ttl:
            return frozenset()
        return frozenset(
            node for node, since in self._missing_since.items() if now - since >= self._ttl
        )
