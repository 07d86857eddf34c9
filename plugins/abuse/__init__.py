"""The `abuse` plugin: rate limits and abuse rules, with the parts only it uses.

    plugin.py     the middleware (`Abuse`): check and charge, settle, headers
    plans.py      named plans → the limits and slots one request is charged
    addresses.py  client address (trusted proxies), allow/deny CIDR lists
    guard.py      address checks and auth-failure bans shared by all instances
    failover.py   the store with its fail_open / fail_closed policy
    anomaly.py    EWMA token-rate anomaly flag
    headers.py    x-ratelimit-* / anthropic-ratelimit-* response headers
"""

from .plugin import Abuse

__all__ = ["Abuse"]
