"""How a user names a commit: kept as an import path for the sessions API; the grammar and
its one resolver live in ``castate.repository.refspec``."""

from __future__ import annotations

from castate.repository.refspec import Revision, resolve

__all__ = ["Revision", "resolve"]
