"""The sessions layer: the state-management API, standing on the repository.

``manager`` holds ``StateManager`` (sessions, checkpoints, records), ``sync`` the blocking
``SyncStateManager``, ``auto`` the automatic checkpoint policy, ``lifecycle`` pause, resume
and critical sections, and ``storage`` the dict storage interface with castate's file
backend. The entry points (compat, integrations, CLI, UI) import from here; the old module
paths (``castate.state``, ``castate.storage``, ``castate.lifecycle``, ``castate.autocheckpoint``,
``castate.sync``) re-export these names so existing imports keep working.
"""

from castate.sessions.auto import AutoCheckpoint, AutoCheckpointer
from castate.sessions.manager import CheckpointInfo, RestoreResult, SaveInfo, SessionInfo, StateManager
from castate.sessions.storage import FileStorageBackend, StorageBackend
from castate.sessions.sync import SyncStateManager

__all__ = [
    "AutoCheckpoint",
    "AutoCheckpointer",
    "CheckpointInfo",
    "FileStorageBackend",
    "RestoreResult",
    "SaveInfo",
    "SessionInfo",
    "StateManager",
    "StorageBackend",
    "SyncStateManager",
]
