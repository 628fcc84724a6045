"""The local-directory backend (castate's embedded default)."""

from castate.backends.local.backend import LocalBackend

__all__ = ["LocalBackend"]
