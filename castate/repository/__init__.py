"""The repository layer: snapshots, commits, refs and history over a backend.

Besides the ``Repository`` it re-exports the lower layers' types that appear in its own and
its callers' signatures (a backend, a commit, a ``default`` encoder hook, a durability, a
reflog entry, a ref repair report), so the layers above (the sessions package) stand on the
repository alone and import nothing from ``castate.backends`` or ``castate.codec``.
"""

from castate.backends.base import Backend, Durability, ReflogEntry, RefRepairReport
from castate.backends.blob import BlobBackend
from castate.codec import Commit
from castate.codec.encoder import Default
from castate.repository.repository import Repository, SaveResult

__all__ = [
    "Backend",
    "BlobBackend",
    "Commit",
    "Default",
    "Durability",
    "RefRepairReport",
    "ReflogEntry",
    "Repository",
    "SaveResult",
]
