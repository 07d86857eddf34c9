"""The embedded store: one process, nothing to install (see store.py)."""

from .limits import MemoryLimits
from .store import MemoryStore

__all__ = ["MemoryLimits", "MemoryStore"]
