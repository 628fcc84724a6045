"""The object codec: canonical encoding of states into content-addressed objects (no I/O)."""

from castate.codec.decoder import Decoder, child_ids
from castate.codec.encoder import Encoder, Shadow
from castate.codec.nodes import Commit, encode_commit, parse_commit
from castate.codec.objects import FORMAT_VERSION, decode_frame, encode_frame, object_id

__all__ = [
    "FORMAT_VERSION",
    "Commit",
    "Decoder",
    "Encoder",
    "Shadow",
    "child_ids",
    "decode_frame",
    "encode_commit",
    "encode_frame",
    "object_id",
    "parse_commit",
]
