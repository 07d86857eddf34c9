"""The `meter` plugin: usage and cost of every response, with the parts only it uses.

    plugin.py         the middleware (`Meter`) and its settings
    extract.py        usage fields from a provider's body or stream
    include_usage.py  asks an OpenAI-style stream for its usage, hides the extra chunk
    estimate.py       token counts when a provider reports none
    tokenizer_process.py  the process that counts them while this one serves
    watch.py          the observer that reads usage as the answer passes
    pricing.py        the price table (config/pricing.yaml) and cost in micro-units
    ledger.py         write-behind counters, billing lines, spend, usage events
    budgets.py        budget rules, their checks, alerts
    webhooks.py       signed budget-alert webhooks with retries
"""

from .plugin import Meter

__all__ = ["Meter"]
