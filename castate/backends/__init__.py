"""Storage backends: blob backends (named blobs, refs moved by compare-and-swap) and the local
directory, which still keeps objects itself."""

from castate.backends.base import ANY, Backend, Durability, ObjectInfo, ReflogEntry, RefUpdate
from castate.backends.blob import BlobBackend, BlobInfo
from castate.backends.local import LocalBackend
from castate.backends.memory import MemoryBackend

__all__ = [
    "ANY",
    "Backend",
    "BlobBackend",
    "BlobInfo",
    "Durability",
    "LocalBackend",
    "MemoryBackend",
    "ObjectInfo",
    "RefUpdate",
    "ReflogEntry",
]
