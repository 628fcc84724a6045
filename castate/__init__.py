"""castate: a content-addressed snapshot store for the state of long-running workflows.

import castate
sm = castate.StateManager(castate.FileStorageBackend("./state"))
await sm.save_session("run-1", state)
cp = await sm.create_checkpoint("run-1", name="before_api_call")
state = await sm.restore_checkpoint(cp)

Without an event loop: castate.SyncStateManager(...) has the same methods, blocking.

StateManager, FileStorageBackend and castate.open(url) also take store URLs:
sqlite:///state.db, postgresql://user@host/db, redis://host:6379/0. An encrypted store:
castate.open(url, key=castate.Passphrase(...)) (docs/security.md).
"""

from castate.backends import Backend, LocalBackend, MemoryBackend
from castate.backends.urls import open_backend
from castate.codec.tracking import TrackedDict, TrackedList, tracked
from castate.codec.types import register, unregistered_as_dicts
from castate.errors import (
    AlreadyExistsError,
    BackendUnavailableError,
    CastateError,
    ConflictError,
    CorruptFileError,
    CorruptionError,
    CorruptObjectError,
    InvalidKeyError,
    KeyRequiredError,
    MissingObjectError,
    NotFoundError,
    RegistrationError,
    StoreError,
    StoreIOError,
    StoreNotFoundError,
    StoreWarning,
    UnregisteredTypeError,
    UnsupportedFormatError,
    UnsupportedValueError,
    UsageError,
    WrongKeyError,
)
from castate.keys import Passphrase, RawKey, Secret
from castate.repository import Repository, SaveResult
from castate.repository.diff import Change, to_patch
from castate.repository.retention import Policy as RetentionPolicy
from castate.sessions.auto import AutoCheckpoint
from castate.sessions.manager import CheckpointInfo, RestoreResult, SaveInfo, SessionInfo, StateManager
from castate.sessions.storage import FileStorageBackend, StorageBackend
from castate.sessions.sync import SyncStateManager

__version__ = "0.1.0"

# Public as castate.open (an assignment, so type checkers see it exported), kept out of __all__.
open = open_backend

__all__ = [
    "AlreadyExistsError",
    "AutoCheckpoint",
    "Backend",
    "BackendUnavailableError",
    "CastateError",
    "Change",
    "CheckpointInfo",
    "ConflictError",
    "CorruptFileError",
    "CorruptObjectError",
    "CorruptionError",
    "FileStorageBackend",
    "InvalidKeyError",
    "KeyRequiredError",
    "LocalBackend",
    "MemoryBackend",
    "MissingObjectError",
    "NotFoundError",
    "Passphrase",
    "RawKey",
    "RegistrationError",
    "Repository",
    "RestoreResult",
    "RetentionPolicy",
    "SaveInfo",
    "SaveResult",
    "Secret",
    "SessionInfo",
    "StateManager",
    "StorageBackend",
    "StoreError",
    "StoreIOError",
    "StoreNotFoundError",
    "StoreWarning",
    "SyncStateManager",
    "TrackedDict",
    "TrackedList",
    "UnregisteredTypeError",
    "UnsupportedFormatError",
    "UnsupportedValueError",
    "UsageError",
    "WrongKeyError",
    "register",
    "to_patch",
    "tracked",
    "unregistered_as_dicts",
]
# castate.open is public but stays out of __all__, so `from castate import *` never shadows the builtin.
