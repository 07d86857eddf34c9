"""The shared store on Redis: standalone, Sentinel or Cluster.

    store.py      `RedisStore`: every concern of `Store`, its keys and scripts
    directory.py  keys, accounts, admin tokens and audit (`RedisDirectory`)
    bus.py        publish and subscribe (`RedisBus`)
    connect.py    URLs and options (`RedisOptions`), clients, Sentinel, Cluster
    lane.py       the pipelined connection the limit calls share
    pubsub.py     one subscription per store, resubscribed after a failover

The Lua scripts are in store/lua/.
"""

from .connect import RedisOptions
from .store import RedisStore

__all__ = ["RedisOptions", "RedisStore"]
