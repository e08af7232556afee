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


def mac_holds(key: bytes, leaf_index: int, leaf_hash: bytes, mac: bytes | None) -> bool:
    return mac is not None and hmac.compare_digest(leaf_mac(key, leaf_index, leaf_hash), mac)
