"""Inclusion and consistency proofs (RFC 9162) as self-contained documents.

Each document carries what an auditor needs to check it with `client_check` and the public
key alone: the signed tree head(s), the proof hashes and, for inclusion, the leaf's bytes
(the stored, encrypted event in its envelope — no personal data in the clear). The ledger
checks every proof it builds before handing it out, so a store whose tree no longer matches
its signed heads yields an integrity error rather than a proof that does not verify.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from ledger.audit import client_check, merkle
from ledger.audit.storage import AuditStore, AuditStoreError, EventRow
from ledger.audit.tree_heads import TreeHead
from ledger.domain.errors import LedgerError

INCLUSION_TYPE = "ledger.inclusion-proof.v1"
CONSISTENCY_TYPE = "ledger.consistency-proof.v1"


class ProofUnavailable(LedgerError):
    """The proof asked for cannot exist (unknown event, no such tree head, not yet covered)."""


@dataclass(frozen=True)
class InclusionProof:
    leaf_index: int
    event: EventRow
    tree_head: TreeHead
    proof: list[bytes]

    def to_json(self) -> dict[str, Any]:
        leaf = self.event.leaf()
        return {
            "type": INCLUSION_TYPE,
            "leaf_index": self.leaf_index,
            "position": self.event.position,
            "originator_id": self.event.originator_id,
            "version": self.event.version,
            "topic": self.event.topic,
            "leaf": base64.b64encode(leaf).decode("ascii"),
            "leaf_hash": merkle.leaf_hash(leaf).hex(),
            "tree_size": self.tree_head.tree_size,
            "proof": [p.hex() for p in self.proof],
            "tree_head": self.tree_head.to_json(),
        }


@dataclass(frozen=True)
class ConsistencyProof:
    old: TreeHead
    new: TreeHead
    proof: list[bytes]

    def to_json(self) -> dict[str, Any]:
        return {
            "type": CONSISTENCY_TYPE,
            "old_size": self.old.tree_size,
            "new_size": self.new.tree_size,
            "proof": [p.hex() for p in self.proof],
            "old_tree_head": self.old.to_json(),
            "new_tree_head": self.new.to_json(),
        }


def _head(store: AuditStore, size: int | None) -> TreeHead:
    head = store.latest_tree_head() if size is None else store.tree_head(size)
    if head is None:
        if size is None:
            raise ProofUnavailable("no tree head has been signed yet; run `ledger tree-head`")
        raise ProofUnavailable(f"no signed tree head of size {size}")
    return head


def inclusion_proof(
    store: AuditStore, originator_id: UUID, version: int, tree_size: int | None = None
) -> InclusionProof:
    position = store.position_of(originator_id, version)
    if position is None:
        raise ProofUnavailable(f"no event {originator_id} v{version}")
    return inclusion_proof_at(store, position, tree_size)


def inclusion_proof_at(
    store: AuditStore, position: int, tree_size: int | None = None
) -> InclusionProof:
    """The inclusion proof of the event at a log position (the API's way of naming it)."""
    index = store.leaf_index_of(position)
    event = store.event_at(position)
    if index is None or event is None:
        raise AuditStoreError(
            f"the event at position {position} is not in the Merkle log; run `ledger verify`"
        )
    head = _head(store, tree_size)
    if index >= head.tree_size:
        raise ProofUnavailable(
            f"the event is leaf {index}, after the tree head of size {head.tree_size}; "
            "run `ledger tree-head` for a newer one"
        )
    proof = store.range_hashes(merkle.inclusion_ranges(index, head.tree_size))
    try:
        client_check.verify_inclusion(
            index, head.tree_size, merkle.leaf_hash(event.leaf()), proof, head.root_hash
        )
    except client_check.CheckFailed as exc:
        raise AuditStoreError(
            f"position {position}: the stored event or tree does not match the signed tree "
            f"head of size {head.tree_size} ({exc}); run `ledger verify`"
        ) from None
    return InclusionProof(index, event, head, proof)


def consistency_proof(
    store: AuditStore, old_size: int, new_size: int | None = None
) -> ConsistencyProof:
    old, new = _head(store, old_size), _head(store, new_size)
    if old.tree_size > new.tree_size:
        raise ProofUnavailable(f"size {old.tree_size} is newer than size {new.tree_size}")
    proof = store.range_hashes(merkle.consistency_ranges(old.tree_size, new.tree_size))
    try:
        client_check.verify_consistency(
            old.tree_size, new.tree_size, old.root_hash, new.root_hash, proof
        )
    except client_check.CheckFailed as exc:
        raise AuditStoreError(
            f"the stored tree does not connect the tree heads of sizes {old.tree_size} and "
            f"{new.tree_size} ({exc}); run `ledger verify`"
        ) from None
    return ConsistencyProof(old, new, proof)
