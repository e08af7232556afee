"""Tamper evidence through the API, on both stores: an auditor fetches signed tree heads,
inclusion and consistency proofs and checks each with the standalone checker
(`ledger/audit/client_check.py`) and the ledger's public key alone; bad sizes and positions
are refused naming the field."""

from __future__ import annotations

import copy

import grpc
import pytest

from ledger.audit import client_check
from ledger.client import consistency_document, inclusion_document, tree_head_document
from ledger.v1 import audit_service_pb2 as audit
from tests.api_support import Api, api, customer, fails

__all__ = ["api"]

Code = grpc.StatusCode


def test_an_auditor_verifies_tree_heads_and_proofs_with_the_public_key_alone(api: Api) -> None:
    public_key = api.ledger.signer.public_key_pem()
    admin = api.client("root", "admin")
    auditor = api.client("auditor.ann", "auditor")
    for n in range(3):
        admin.create_customer(customer(given_name=f"P{n}"))
    first = auditor.get_tree_head()
    size, root = client_check.verify_tree_head(tree_head_document(first), public_key)
    assert size == first.tree_size > 0 and root == first.root_hash
    assert first.key_id == api.ledger.signer.key_id()

    for n in range(4):
        admin.create_customer(customer(given_name=f"Q{n}"))
    latest = auditor.get_tree_head()  # signs what was written since
    assert latest.tree_size > first.tree_size
    assert auditor.get_tree_head(first.tree_size) == first  # old heads are kept

    # Every event of the latest tree, named by position and by leaf index.
    for index in range(latest.tree_size):
        proof = auditor.get_inclusion_proof(leaf_index=index, tree_size=latest.tree_size)
        assert proof.leaf_index == index and proof.tree_size == latest.tree_size
        client_check.check_inclusion_document(inclusion_document(proof), public_key)
        again = auditor.get_inclusion_proof(proof.position, tree_size=latest.tree_size)
        assert again.hashes == proof.hashes and again.leaf == proof.leaf
    # Against an older head too.
    old = auditor.get_inclusion_proof(leaf_index=0, tree_size=first.tree_size)
    client_check.check_inclusion_document(inclusion_document(old), public_key)

    consistency = auditor.get_consistency_proof(first.tree_size)  # to the latest
    assert consistency.second_tree_size >= latest.tree_size
    message = client_check.check_consistency_document(consistency_document(consistency), public_key)
    assert f"extends the tree of size {first.tree_size}" in message
    same = auditor.get_consistency_proof(first.tree_size, first.tree_size)
    client_check.check_consistency_document(consistency_document(same), public_key)


def test_altered_proofs_fail_the_standalone_check(api: Api) -> None:
    public_key = api.ledger.signer.public_key_pem()
    admin = api.client("root", "admin")
    for n in range(5):
        admin.create_customer(customer(given_name=f"P{n}"))
    auditor = api.client("auditor.ann", "auditor")
    first = auditor.get_tree_head()
    admin.create_customer(customer())
    document = inclusion_document(auditor.get_inclusion_proof(2))
    forged = copy.deepcopy(document)
    forged["proof"][0] = "00" * 32
    with pytest.raises(client_check.CheckFailed):
        client_check.check_inclusion_document(forged, public_key)
    forged = copy.deepcopy(document)
    forged["tree_head"]["root_hash"] = "11" * 32
    with pytest.raises(client_check.CheckFailed):
        client_check.check_inclusion_document(forged, public_key)
    consistency = consistency_document(auditor.get_consistency_proof(first.tree_size))
    consistency["proof"][-1] = "22" * 32
    with pytest.raises(client_check.CheckFailed):
        client_check.check_consistency_document(consistency, public_key)


def test_bad_sizes_and_positions_name_the_field(api: Api) -> None:
    admin = api.client("root", "admin")
    for _ in range(3):
        admin.create_customer(customer())
    auditor = api.client("auditor.ann", "auditor")
    head = auditor.get_tree_head()
    size = head.tree_size
    admin.create_customer(customer())
    unsigned = auditor.get_tree_head().tree_size - 1  # within the log, never signed
    assert auditor.get_tree_head().tree_size > size
    cases = [
        (lambda: auditor.get_tree_head(-1), Code.INVALID_ARGUMENT, "tree_size"),
        (lambda: auditor.get_tree_head(10**9), Code.OUT_OF_RANGE, "tree_size"),
        (lambda: auditor.get_tree_head(unsigned), Code.NOT_FOUND, "tree_size"),
        (lambda: auditor.get_inclusion_proof(), Code.INVALID_ARGUMENT, "position"),
        (lambda: auditor.get_inclusion_proof(-3), Code.INVALID_ARGUMENT, "position"),
        (lambda: auditor.get_inclusion_proof(1, leaf_index=0), Code.INVALID_ARGUMENT, "position"),
        (lambda: auditor.get_inclusion_proof(leaf_index=-1), Code.INVALID_ARGUMENT, "leaf_index"),
        (lambda: auditor.get_inclusion_proof(10**9), Code.OUT_OF_RANGE, "position"),
        (lambda: auditor.get_inclusion_proof(leaf_index=10**9), Code.OUT_OF_RANGE, "leaf_index"),
        (
            lambda: auditor.get_inclusion_proof(leaf_index=size, tree_size=size),
            Code.OUT_OF_RANGE,
            "leaf_index",
        ),
        (lambda: auditor.get_inclusion_proof(1, tree_size=-1), Code.INVALID_ARGUMENT, "tree_size"),
        (lambda: auditor.get_inclusion_proof(1, tree_size=10**9), Code.OUT_OF_RANGE, "tree_size"),
        (lambda: auditor.get_consistency_proof(0), Code.INVALID_ARGUMENT, "first_tree_size"),
        (lambda: auditor.get_consistency_proof(-1), Code.INVALID_ARGUMENT, "first_tree_size"),
        (
            lambda: auditor.get_consistency_proof(size, size - 1),
            Code.INVALID_ARGUMENT,
            "first_tree_size",
        ),
        (
            lambda: auditor.get_consistency_proof(size, 10**9),
            Code.OUT_OF_RANGE,
            "second_tree_size",
        ),
        (lambda: auditor.get_consistency_proof(10**9), Code.OUT_OF_RANGE, "first_tree_size"),
        (lambda: auditor.get_consistency_proof(unsigned), Code.NOT_FOUND, "first_tree_size"),
    ]
    for call, code, field in cases:
        details = fails(call, code)
        assert field in details["field_violations"], (field, details)


def test_who_may_call_the_proof_methods(api: Api) -> None:
    api.client("root", "admin").create_customer(customer())
    for principal, role in (("svc", "service"), ("aud", "auditor"), ("dpo", "compliance")):
        client = api.client(principal, role)
        head = client.get_tree_head()
        client.get_inclusion_proof(1)
        client.get_consistency_proof(head.tree_size)
    sales = api.client("sales.alice", "sales")
    for call in (
        sales.get_tree_head,
        lambda: sales.get_inclusion_proof(1),
        lambda: sales.get_consistency_proof(1),
    ):
        fails(call, Code.PERMISSION_DENIED)
    auditor = api.client("aud", "auditor")
    denied = list(auditor.list_access_log('principal = "sales.alice" AND outcome = DENIED'))
    assert [r.method.rpartition("/")[2] for r in denied] == [
        "GetTreeHead",
        "GetInclusionProof",
        "GetConsistencyProof",
    ]


def test_the_raw_messages_carry_the_signed_head(api: Api) -> None:
    api.client("root", "admin").create_customer(customer())
    auditor = api.client("aud", "auditor")
    proof = auditor.audit.GetInclusionProof(
        audit.GetInclusionProofRequest(position=1), **auditor.call_options
    )
    assert proof.tree_head.signature and proof.tree_head.tree_size == proof.tree_size
    assert client_check.hash_leaf(proof.leaf) == proof.leaf_hash


def test_an_empty_log_has_a_signed_empty_tree_head(api: Api) -> None:
    head = api.client("aud", "auditor").get_tree_head()
    assert head.tree_size == 0 and head.root_hash == client_check.EMPTY_ROOT
    client_check.verify_tree_head(tree_head_document(head), api.ledger.signer.public_key_pem())
