"""castate: a content-addressed snapshot store for the state of long-running workflows.

import castate
sm = castate.StateManager(castate.FileStorageBackend("./state"))
await sm.save_session("run-1", state)
cp = await sm.create_checkpoint("run-1", name="before_api_call")
state = await sm.restore_checkpoint(cp)
"""

from castate.backends import Backend, LocalBackend, MemoryBackend
from castate.errors import (
    CastateError,
    ConflictError,
    CorruptFileError,
    CorruptionError,
    CorruptObjectError,
    InvalidKeyError,
    MissingObjectError,
    NotFoundError,
    StoreError,
    UnsupportedFormatError,
    UnsupportedValueError,
)
from castate.repository import Repository, SaveResult
from castate.repository.diff import Change, to_patch
from castate.repository.retention import Policy as RetentionPolicy
from castate.state import CheckpointInfo, RestoreResult, SessionInfo, StateManager
from castate.storage import FileStorageBackend, StorageBackend

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "CastateError",
    "Change",
    "CheckpointInfo",
    "ConflictError",
    "CorruptFileError",
    "CorruptObjectError",
    "CorruptionError",
    "FileStorageBackend",
    "InvalidKeyError",
    "LocalBackend",
    "MemoryBackend",
    "MissingObjectError",
    "NotFoundError",
    "Repository",
    "RestoreResult",
    "RetentionPolicy",
    "SaveResult",
    "SessionInfo",
    "StateManager",
    "StorageBackend",
    "StoreError",
    "UnsupportedFormatError",
    "UnsupportedValueError",
    "to_patch",
]
