"""GetTreeHead, GetInclusionProof and GetConsistencyProof: the Merkle log (ledger.audit)
served to auditors who trust nothing but the ledger's public key.

Every proof is against a *signed* tree head, returned with it, so a client can check it
with the standalone checker (`ledger/audit/client_check.py`) alone. Size 0 means "the
latest": the server first signs the log as it stands if it grew since the last head, so an
event just written can be proven at once. Sizes are checked before any work: negative or
contradictory → INVALID_ARGUMENT, beyond the log → OUT_OF_RANGE, within the log but never
signed → NOT_FOUND; each with a field violation naming the request field.

No personal data is involved: leaves are the stored (encrypted) events.
"""

from __future__ import annotations

import threading

import grpc

from ledger.api.errors import ApiError
from ledger.application import CustomerLedger
from ledger.audit import merkle
from ledger.audit.proofs import consistency_proof, inclusion_proof_at
from ledger.audit.storage import AuditStore
from ledger.audit.tree_heads import TreeHead
from ledger.domain.errors import FieldViolation
from ledger.v1 import audit_service_pb2 as pb

MAX_SIZE = 2**62


def tree_head_message(head: TreeHead) -> pb.TreeHead:
    message = pb.TreeHead(
        tree_size=head.tree_size,
        root_hash=head.root_hash,
        signature=head.signature,
        key_id=head.key_id,
    )
    # Exactly the signed milliseconds (a datetime round trip could drift by a microsecond).
    message.sign_time.seconds, millis = divmod(head.timestamp_ms, 1000)
    message.sign_time.nanos = millis * 1_000_000
    return message


def _error(code: grpc.StatusCode, reason: str, field: str, message: str) -> ApiError:
    return ApiError(
        code, reason, f"{field}: {message}", violations=[FieldViolation(field, message)]
    )


def out_of_range(field: str, message: str) -> ApiError:
    return _error(grpc.StatusCode.OUT_OF_RANGE, "OUT_OF_RANGE", field, message)


def _size(value: int, field: str, *, zero_is_latest: bool = True) -> int:
    if value < 0 or value >= MAX_SIZE:
        raise ApiError.invalid(field, "must not be negative")
    if value == 0 and not zero_is_latest:
        raise ApiError.invalid(field, "must be 1 or more")
    return value


class Proofs:
    def __init__(self, ledger: CustomerLedger) -> None:
        self.ledger = ledger
        # Issuing reads the size, then the latest head: one issuer at a time in this process,
        # so two concurrent callers never see each other's head as newer than the log.
        self._issuing = threading.Lock()

    def _store(self) -> AuditStore:
        return AuditStore.open(self.ledger.settings)

    def _latest(self) -> TreeHead:
        with self._issuing:
            return self.ledger.issue_tree_head()

    def _head(self, store: AuditStore, size: int, field: str) -> TreeHead:
        """The signed head of `size` (0: the latest, signed now if the log grew)."""
        if size == 0:
            return self._latest()
        head = store.tree_head(size)
        if head is not None:
            return head
        logged = store.size()
        if size > logged:
            raise out_of_range(field, f"the log holds {logged} events")
        raise _error(
            grpc.StatusCode.NOT_FOUND,
            "TREE_HEAD_NOT_FOUND",
            field,
            "no tree head of this size was signed (0 asks for the latest)",
        )

    def tree_head(self, request: pb.GetTreeHeadRequest) -> pb.TreeHead:
        size = _size(request.tree_size, "tree_size")
        with self._store() as store:
            return tree_head_message(self._head(store, size, "tree_size"))

    def inclusion(self, request: pb.GetInclusionProofRequest) -> pb.GetInclusionProofResponse:
        by_index = request.HasField("leaf_index")
        if by_index == (request.position != 0):
            raise ApiError.invalid("position", "give exactly one of position and leaf_index")
        field = "leaf_index" if by_index else "position"
        wanted = request.leaf_index if by_index else request.position
        if wanted < 0 or wanted >= MAX_SIZE:
            raise ApiError.invalid(field, "must not be negative")
        size = _size(request.tree_size, "tree_size")
        with self._store() as store:
            head = self._head(store, size, "tree_size")
            position = store.position_at(wanted) if by_index else wanted
            index = store.leaf_index_of(position) if position is not None else None
            if position is None or index is None:
                if by_index or wanted > (self.ledger.recorder.max_notification_id() or 0):
                    raise out_of_range(field, f"the log holds {store.size()} events")
                raise _error(
                    grpc.StatusCode.NOT_FOUND, "EVENT_NOT_FOUND", field, "no event at this position"
                )
            if index >= head.tree_size:
                raise out_of_range(
                    field, f"the event is leaf {index}, outside the tree of size {head.tree_size}"
                )
            proof = inclusion_proof_at(store, position, head.tree_size)
        leaf = proof.event.leaf()
        return pb.GetInclusionProofResponse(
            leaf_index=proof.leaf_index,
            tree_size=proof.tree_head.tree_size,
            hashes=proof.proof,
            leaf_hash=merkle.leaf_hash(leaf),
            tree_head=tree_head_message(proof.tree_head),
            leaf=leaf,
            position=position,
        )

    def consistency(self, request: pb.GetConsistencyProofRequest) -> pb.GetConsistencyProofResponse:
        first = _size(request.first_tree_size, "first_tree_size", zero_is_latest=False)
        second = _size(request.second_tree_size, "second_tree_size")
        if second and first > second:
            raise ApiError.invalid("first_tree_size", "must not exceed second_tree_size")
        with self._store() as store:
            new = self._head(store, second, "second_tree_size")
            if first > new.tree_size:
                raise out_of_range(
                    "first_tree_size", f"the latest signed tree head has size {new.tree_size}"
                )
            old = self._head(store, first, "first_tree_size")
            proof = consistency_proof(store, old.tree_size, new.tree_size)
        return pb.GetConsistencyProofResponse(
            first_tree_size=proof.old.tree_size,
            second_tree_size=proof.new.tree_size,
            hashes=proof.proof,
            first_tree_head=tree_head_message(proof.old),
            second_tree_head=tree_head_message(proof.new),
        )
