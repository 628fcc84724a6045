"""Old path of ``castate.sessions.lifecycle`` (pause, resume, critical sections), kept so existing imports work."""

from castate.sessions.lifecycle import LIFECYCLE_KEYS, Sessions, carried_meta, checkpointed, pause, resume

__all__ = ["LIFECYCLE_KEYS", "Sessions", "carried_meta", "checkpointed", "pause", "resume"]
