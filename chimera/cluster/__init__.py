"""Scale-out: several Chimera processes sharing one Redis.

:mod:`chimera.cluster.fanout` carries live events and cancels between processes;
:mod:`chimera.cluster.membership` keeps this process's lease and takes over the
jobs of processes whose lease expired. The store itself is
:class:`chimera.store.redis.RedisStore`.
"""
