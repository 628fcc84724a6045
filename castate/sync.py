"""Old path of ``castate.sessions.sync`` (SyncStateManager, the blocking API), kept so existing imports work."""

from castate.sessions.sync import SyncStateManager

__all__ = ["SyncStateManager"]
