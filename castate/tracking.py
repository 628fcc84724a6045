"""Old path of ``castate.codec.tracking`` (``castate.tracked``, ``TrackedDict``, ``TrackedList``),
kept so existing imports work: change tracking now sits with the codec whose input it is."""

from castate.codec.tracking import TrackedDict, TrackedList, tracked

__all__ = ["TrackedDict", "TrackedList", "tracked"]
