"""Old path of ``castate.sessions.auto`` (automatic checkpoints), kept so existing imports work."""

from castate.sessions.auto import PRUNE_ATTEMPTS, AutoCheckpoint, AutoCheckpointer, FieldPath

__all__ = ["PRUNE_ATTEMPTS", "AutoCheckpoint", "AutoCheckpointer", "FieldPath"]
