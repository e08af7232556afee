"""The Merkle leaf of one stored event: its stored bytes inside their envelope, in one fixed
binary encoding that anyone can reproduce from an export of the event table.

    leaf = version   u8   (1)
           position  u64  big-endian: the event's notification id (its place in the log)
           id_len    u16  big-endian, then the originator id as UTF-8
                          (a UUID in its canonical lower-case, hyphenated form)
           version   u64  big-endian: the originator (customer) version
           topic_len u16  big-endian, then the event topic as UTF-8
           state_len u32  big-endian, then the stored state bytes exactly as stored

The state is the *stored* form: personal data in it is already encrypted under the customer's
key, so destroying that key (erasure) changes no byte of any leaf and no hash of the tree.
Every field that says where an event belongs (position, customer, version, type) is inside the
leaf, so moving, renumbering or retyping an event changes its leaf hash. Length prefixes make
the encoding unambiguous (no two different events share a leaf).

`client_check.encode_leaf` is an independent copy for auditors; tests keep the two equal.
"""

from __future__ import annotations

import struct
from uuid import UUID

LEAF_FORMAT_VERSION = 1
_HEAD = struct.Struct(">BQH")
_MIDDLE = struct.Struct(">QH")
_STATE = struct.Struct(">I")


def canonical_id(originator_id: UUID | str) -> str:
    """The text form of an originator id that goes into the leaf."""
    return str(originator_id)


def uuid_text_from_hex(hex_id: str) -> str:
    """SQLite stores UUIDs as 32 hex digits; the leaf uses the canonical text form. Slicing
    is several times cheaper than `str(UUID(...))` and gives the same text for every id the
    library writes (lower-case hex); anything else goes through UUID() and so is checked."""
    if len(hex_id) == 32 and hex_id == hex_id.lower():
        return f"{hex_id[:8]}-{hex_id[8:12]}-{hex_id[12:16]}-{hex_id[16:20]}-{hex_id[20:]}"
    return str(UUID(hex_id))


def encode_leaf(position: int, originator_id: str, version: int, topic: str, state: bytes) -> bytes:
    oid = originator_id.encode("utf-8")
    top = topic.encode("utf-8")
    return b"".join(
        (
            _HEAD.pack(LEAF_FORMAT_VERSION, position, len(oid)),
            oid,
            _MIDDLE.pack(version, len(top)),
            top,
            _STATE.pack(len(state)),
            state,
        )
    )


def decode_leaf(leaf: bytes) -> tuple[int, str, int, str, bytes]:
    """(position, originator id, version, topic, state); ValueError when malformed."""
    try:
        tag, position, id_len = _HEAD.unpack_from(leaf, 0)
        at = _HEAD.size
        oid = leaf[at : at + id_len].decode("utf-8")
        at += id_len
        version, topic_len = _MIDDLE.unpack_from(leaf, at)
        at += _MIDDLE.size
        topic = leaf[at : at + topic_len].decode("utf-8")
        at += topic_len
        (state_len,) = _STATE.unpack_from(leaf, at)
        at += _STATE.size
        state = leaf[at : at + state_len]
    except (struct.error, UnicodeDecodeError) as exc:
        raise ValueError("not a ledger leaf") from exc
    if tag != LEAF_FORMAT_VERSION or len(state) != state_len or at + state_len != len(leaf):
        raise ValueError("not a ledger leaf")
    return position, oid, version, topic, bytes(state)
