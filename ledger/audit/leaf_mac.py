"""Leaf authentication codes: proof that a Merkle leaf was appended by the ledger's own
writer, not by someone who can only write to the database.

A leaf hash can be computed by anyone who can read the event table, so an insider can
append an event together with a correct leaf (or rewrite one and recompute its leaf and
the nodes above it) and the tree alone cannot tell. Each leaf therefore carries
HMAC-SHA256(key, u64 leaf index || leaf hash), stored in the same row and written in the
same INSERT as the leaf. The key is derived (HKDF, info `ledger.leaf-mac.v1`) from the
ledger's Ed25519 signing key: the database never holds it, and there is no new file to
keep. Cost: one HMAC per event, about a microsecond, and 32 bytes per leaf row.

The signer refuses to sign leaves whose code is missing or wrong, and `ledger verify`
(when it has the private key) checks every one.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from ledger.signing import LedgerSigner

LEAF_MAC_INFO = b"ledger.leaf-mac.v1"
MAC_SIZE = 32
_INDEX = struct.Struct(">Q").pack


def leaf_key(signer: LedgerSigner) -> bytes:
    return signer.derive_key(LEAF_MAC_INFO)


def leaf_mac(key: bytes, leaf_index: int, leaf_hash: bytes) -> bytes:
    return hmac.digest(key, _INDEX(leaf_index) + leaf_hash, "sha256")


class LeafMac:
    """`leaf_mac` under one key, with HMAC's two padded key blocks hashed once: about half
    the cost per leaf (the writer's batches and the verifier's pass use it)."""

    def __init__(self, key: bytes) -> None:
        block = key.ljust(64, b"\0") if len(key) <= 64 else hashlib.sha256(key).digest()
        block = block.ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def __call__(self, leaf_index: int, leaf_hash: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(_INDEX(leaf_index) + leaf_hash)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


def mac_holds(key: bytes, leaf_index: int, leaf_hash: bytes, mac: bytes | None) -> bool:
    return mac is not None and hmac.compare_digest(leaf_mac(key, leaf_index, leaf_hash), mac)
