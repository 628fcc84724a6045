"""Old path of ``castate.sessions.storage`` (the dict storage interface), kept so existing imports work."""

from castate.sessions.storage import FileStorageBackend, StorageBackend

__all__ = ["FileStorageBackend", "StorageBackend"]
