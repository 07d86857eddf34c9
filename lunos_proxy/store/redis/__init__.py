"""The shared store on Redis: standalone, Sentinel or Cluster.

    store.py      `RedisStore`: the protocols composed, and the connections they share
    limits.py     limits, leases and bans, batched per turn over the lanes (`RedisLimits`)
    directory.py  keys, accounts, admin tokens and audit (`RedisDirectory`)
    accounting.py usage and spend counters, once-only claims (`RedisAccounting`)
    bus.py        publish and subscribe, cooldowns (`RedisBus`)
    scripts.py    the Lua scripts and how calls fail (`StoreError`)
    connect.py    URLs and options (`RedisOptions`), clients, Sentinel, Cluster
    lane.py       the pipelined connection the limit calls share
    resp.py       the commands sent on it, encoded
    pubsub.py     one subscription per store, resubscribed after a failover

The Lua scripts are in store/lua/.
"""

from .connect import RedisOptions
from .store import RedisStore

__all__ = ["RedisOptions", "RedisStore"]
