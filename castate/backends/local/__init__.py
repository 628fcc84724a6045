"""The local-directory backend (castate's embedded default): a blob backend on plain files."""

from castate.backends.local.blobs import LocalBackend

__all__ = ["LocalBackend"]
