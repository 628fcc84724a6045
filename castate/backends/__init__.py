"""Storage backends: bytes by key, and refs moved by compare-and-swap."""

from castate.backends.base import ANY, Backend, ObjectInfo, ReflogEntry, RefUpdate
from castate.backends.local import LocalBackend
from castate.backends.memory import MemoryBackend

__all__ = ["ANY", "Backend", "LocalBackend", "MemoryBackend", "ObjectInfo", "RefUpdate", "ReflogEntry"]
