"""Signed tree heads: the ledger's signed statement "at this time the log held this many
events, and this is the root hash over them".

An auditor who keeps one can later ask for a consistency proof to any newer head (or run
`ledger verify --from-tree-head`) and so detect any rewrite of the history it covers, even
one made by someone holding the database. The signed bytes are fixed and binary, prefixed
with a type tag so that no signature over a tree head can be mistaken for a signature over
an erasure certificate (those sign JSON) or the reverse:

    b"ledger.tree-head.v1" 0x00 | u64 tree_size | u64 timestamp_ms | 32-byte root hash

Issuance policy (see README "Auditing"): a head is issued whenever the log has grown since
the latest head — after every CLI command that wrote (on close), by `ledger tree-head`, and by
long-running processes via `CustomerLedger.issue_tree_head()`. Heads are kept for ever; a
head is never issued for a tree that is not an extension of the latest head.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ledger.audit import client_check, merkle
from ledger.signing import LedgerSigner, SigningKeyError, public_key_id, verify_signature

if TYPE_CHECKING:
    from ledger.audit.storage import AuditStore

TREE_HEAD_TYPE = client_check.TREE_HEAD_TYPE


class TreeHeadFormatError(ValueError):
    """Text that should be a tree head is not one (says which part is wrong)."""


@dataclass(frozen=True)
class TreeHead:
    tree_size: int
    root_hash: bytes
    timestamp_ms: int
    key_id: str
    signature: bytes

    @classmethod
    def issue(
        cls, tree_size: int, root_hash: bytes, signer: LedgerSigner, now: datetime | None = None
    ) -> TreeHead:
        moment = now or datetime.now(UTC)
        timestamp_ms = int(moment.timestamp() * 1000)
        message = client_check.tree_head_message(tree_size, timestamp_ms, root_hash)
        return cls(tree_size, root_hash, timestamp_ms, signer.key_id(), signer.sign(message))

    def signed_bytes(self) -> bytes:
        return client_check.tree_head_message(self.tree_size, self.timestamp_ms, self.root_hash)

    def verify(self, public_key_pem: str) -> bool:
        """True when the signature is the ledger key's over exactly these fields."""
        try:
            if public_key_id(public_key_pem) != self.key_id:
                return False
            return verify_signature(public_key_pem, self.signed_bytes(), self.signature)
        except (ValueError, SigningKeyError):
            return False

    @property
    def timestamp(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": TREE_HEAD_TYPE,
            "tree_size": self.tree_size,
            "root_hash": self.root_hash.hex(),
            "timestamp_ms": self.timestamp_ms,
            "timestamp": self.timestamp.isoformat().replace("+00:00", "Z"),
            "key_id": self.key_id,
            "signature": base64.b64encode(self.signature).decode("ascii"),
        }

    @classmethod
    def from_json(cls, data: Any) -> TreeHead:
        if not isinstance(data, dict):
            raise TreeHeadFormatError("a tree head is a JSON object")
        try:
            size, stamp, root, signature = client_check.parse_tree_head(data)
        except client_check.CheckFailed as exc:
            raise TreeHeadFormatError(str(exc)) from None
        key_id = data.get("key_id")
        if not isinstance(key_id, str):
            raise TreeHeadFormatError("key_id must be a string")
        return cls(size, root, stamp, key_id, signature)


class RefusedToSign(Exception):
    """The stored tree is not an extension of the latest signed head (it was truncated or
    rewritten): signing it would vouch for a forked history. Run `ledger verify`."""


def issue_tree_head(
    store: AuditStore, signer: LedgerSigner, now: datetime | None = None
) -> TreeHead:
    """The latest signed tree head, issuing a new one first if the log has grown.

    Before signing, the new root is checked to extend the latest head (an RFC 9162
    consistency proof from the stored tree), so the ledger never signs a forked history.
    """
    size = store.size()
    latest = store.latest_tree_head()
    if latest is not None and latest.tree_size > size:
        raise RefusedToSign(
            f"the log holds {size} leaves but tree head of size {latest.tree_size} was signed"
        )
    root = store.root(size)
    if latest is not None and latest.tree_size == size:
        if root != latest.root_hash:
            raise RefusedToSign(f"the tree of size {size} no longer has the root signed for it")
        return latest
    if latest is not None:
        proof = store.range_hashes(merkle.consistency_ranges(latest.tree_size, size))
        try:
            client_check.verify_consistency(latest.tree_size, size, latest.root_hash, root, proof)
        except client_check.CheckFailed as exc:
            raise RefusedToSign(
                f"the tree of size {size} does not extend the signed tree head of size "
                f"{latest.tree_size}: {exc}"
            ) from None
    return store.add_tree_head(TreeHead.issue(size, root, signer, now))
