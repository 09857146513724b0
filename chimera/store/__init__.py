"""Where jobs and their events are kept."""

from chimera.store.base import Store
from chimera.store.sqlite import SQLiteStore

__all__ = ["SQLiteStore", "Store"]
