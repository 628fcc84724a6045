"""Old path of ``castate.sessions.manager`` (StateManager and its records), kept so existing imports work."""

from castate.sessions.manager import (
    UPDATE_ATTEMPTS,
    UPDATE_BACKOFF,
    UPDATE_BACKOFF_MAX,
    CheckpointInfo,
    RestoreResult,
    SaveInfo,
    SessionInfo,
    StateManager,
)
from castate.sessions.storage import FileStorageBackend, StorageBackend

__all__ = [
    "UPDATE_ATTEMPTS",
    "UPDATE_BACKOFF",
    "UPDATE_BACKOFF_MAX",
    "CheckpointInfo",
    "FileStorageBackend",
    "RestoreResult",
    "SaveInfo",
    "SessionInfo",
    "StateManager",
    "StorageBackend",
]
