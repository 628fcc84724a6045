"""The repository layer: snapshots, commits, refs and history over a backend."""

from castate.repository.repository import Repository, SaveResult

__all__ = ["Repository", "SaveResult"]
