"""The one error a store raises: callers apply their failure policy in one place."""

from __future__ import annotations

__all__ = ["StoreError"]


class StoreError(Exception):
    """The backing service failed or could not be reached."""
