"""Rate limits and abuse rules, used by the `abuse` plugin (plugins/abuse.py).

    plans.py      named plans → the limits and slots one request is charged
    addresses.py  client address (trusted proxies), allow/deny CIDR lists
    guard.py      address checks and auth-failure bans shared by all instances
    failover.py   the store with its fail_open / fail_closed policy
    anomaly.py    EWMA token-rate anomaly flag
    headers.py    x-ratelimit-* / anthropic-ratelimit-* response headers
"""
