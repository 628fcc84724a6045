"""castate's storage format 2: objects in immutable, chain-compressed packs over any blob backend.

Glossary: a *pack* is one blob holding the frames of one save's new objects; a *chain* is a
run of packs of one stream (session) compressed as one zstd stream, cut at ``CHAIN_MAX_RAW``
raw bytes; the *epoch* is the hidden ref gc moves before it rewrites packs.
"""

from castate.repository.packs.format import CHAIN_MAX_RAW, PackInfo
from castate.repository.packs.store import EPOCH_REF, PackStore

__all__ = ["CHAIN_MAX_RAW", "EPOCH_REF", "PackInfo", "PackStore"]
