"""RFC 6962 conformance: published reference vectors, corrupted-proof probes, and a property
test of our proofs against a naive, literal transcription of the RFC's recursive definitions.

Reference vectors are copied verbatim from Google Trillian (Apache-2.0):
* `merkle/testonly/constants.go` (commit 54870a44b0531d1bad40b7a1a1f926253e41be56):
  the eight leaf inputs, the hashes of every perfect subtree (`NodeHashes`) and the roots of
  the trees of size 0..8 (`RootHashes`, `EmptyRootHash`);
* `merkle/logverifier/log_verifier_test.go` (commit 3d7922afdce9fd0144e16aae08bea061c0ad1aee):
  `inclusionProofs` and `consistencyProofs` (leaf numbers there are 1-based), and the ways
  `corruptInclusionProof` / `corruptConsistencyProof` damage a proof.
None of the expected values below was produced by our own code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.audit import client_check, merkle
from ledger.audit.client_check import CheckFailed, verify_consistency, verify_inclusion


def h(text: str) -> bytes:
    return bytes.fromhex(text)


LEAVES = [
    h(""),
    h("00"),
    h("10"),
    h("2021"),
    h("3031"),
    h("40414243"),
    h("5051525354555657"),
    h("606162636465666768696a6b6c6d6e6f"),
]
NODE_HASHES = [
    [
        h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
        h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
        h("0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7"),
        h("07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7"),
        h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        h("4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658"),
        h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
        h("46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1"),
    ],
    [
        h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
        h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
        h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
        h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
    ],
    [
        h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
    ],
    [h("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")],
]
EMPTY_ROOT = h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
ROOTS = [
    EMPTY_ROOT,
    h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
    h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
    h("aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77"),
    h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    h("4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4"),
    h("76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef"),
    h("ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c"),
    h("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"),
]
# (leaf number, 1-based as published; tree size; proof)
INCLUSION = [
    (1, 1, []),
    (
        1,
        8,
        [
            h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        6,
        8,
        [
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (3, 3, [h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")]),
    (
        2,
        5,
        [
            h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
]
CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        6,
        8,
        [
            h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (
        2,
        5,
        [
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
]
SOME_HASH = h("abacaba000000000000000000000000000000000000000000060061e00123456")


# --- our tree, built from stored perfect-subtree hashes ------------------------------------


class MemoryTree:
    """What the store holds (every perfect subtree's hash), in memory."""

    def __init__(self, leaves: list[bytes]) -> None:
        self.nodes: dict[merkle.Node, bytes] = {}
        frontier = merkle.Frontier()
        for index, leaf in enumerate(leaves):
            hashed = merkle.leaf_hash(leaf)
            self.nodes[(0, index)] = hashed
            frontier.append(hashed, self.nodes.__setitem__)
        self.size = len(leaves)

    def root(self, size: int) -> bytes:
        return merkle.fold([self.nodes[n] for n in merkle.peaks(size)])

    def inclusion(self, index: int, size: int) -> list[bytes]:
        return merkle.range_hashes(merkle.inclusion_ranges(index, size), self.nodes)

    def consistency(self, old: int, new: int) -> list[bytes]:
        return merkle.range_hashes(merkle.consistency_ranges(old, new), self.nodes)


REFERENCE = MemoryTree(LEAVES)


def test_empty_tree_hash_is_sha256_of_nothing() -> None:
    assert merkle.EMPTY_ROOT == EMPTY_ROOT == client_check.EMPTY_ROOT
    assert merkle.root_of([]) == EMPTY_ROOT
    assert client_check.root_from_leaf_hashes([]) == (0, EMPTY_ROOT)


def test_every_perfect_subtree_matches_the_reference() -> None:
    for level, hashes in enumerate(NODE_HASHES):
        for index, expected in enumerate(hashes):
            assert REFERENCE.nodes[(level, index)] == expected, (level, index)
    for index, leaf in enumerate(LEAVES):
        assert client_check.hash_leaf(leaf) == NODE_HASHES[0][index]


@pytest.mark.parametrize("size", range(9))
def test_roots_of_the_reference_trees(size: int) -> None:
    assert REFERENCE.root(size) == ROOTS[size]
    assert merkle.root_of(merkle.leaf_hash(x) for x in LEAVES[:size]) == ROOTS[size]
    hashes = [client_check.hash_leaf(x) for x in LEAVES[:size]]
    assert client_check.root_from_leaf_hashes(hashes) == (size, ROOTS[size])


@pytest.mark.parametrize(("leaf", "size", "proof"), INCLUSION)
def test_inclusion_proofs_match_the_reference(leaf: int, size: int, proof: list[bytes]) -> None:
    index = leaf - 1
    assert REFERENCE.inclusion(index, size) == proof
    leaf_hash = merkle.leaf_hash(LEAVES[index])
    verify_inclusion(index, size, leaf_hash, proof, ROOTS[size])
    for description, probe in corrupt_inclusion(index, size, leaf_hash, proof, ROOTS[size]):
        with pytest.raises(CheckFailed):
            probe()
            pytest.fail(f"accepted a corrupted inclusion proof: {description}")


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY)
def test_consistency_proofs_match_the_reference(old: int, new: int, proof: list[bytes]) -> None:
    assert REFERENCE.consistency(old, new) == proof
    verify_consistency(old, new, ROOTS[old], ROOTS[new], proof)
    if proof:
        for description, probe in corrupt_consistency(old, new, ROOTS[old], ROOTS[new], proof):
            with pytest.raises(CheckFailed):
                probe()
                pytest.fail(f"accepted a corrupted consistency proof: {description}")


def test_trivial_and_impossible_consistency_claims() -> None:
    """Trillian's TestVerifyConsistencyProof table, with real roots where it says 'don't
    care' (we also insist that a size-0 tree has the empty root)."""
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    verify_consistency(0, 1, EMPTY_ROOT, ROOTS[1], [])
    verify_consistency(1, 1, ROOTS[1], ROOTS[1], [])
    bad = [
        (1, 1, ROOTS[1], ROOTS[2], []),  # same size, different roots
        (1, 0, ROOTS[1], EMPTY_ROOT, []),  # time travel to the past
        (2, 1, ROOTS[2], ROOTS[1], []),
        (1, 2, ROOTS[1], ROOTS[2], []),  # empty proof
        (0, 0, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT]),  # roots match, proof not empty
        (0, 1, EMPTY_ROOT, ROOTS[1], [EMPTY_ROOT]),
        (1, 1, ROOTS[1], ROOTS[1], [EMPTY_ROOT]),
        (0, 1, SOME_HASH, ROOTS[1], []),  # a size-0 tree with a non-empty root
    ]
    for old, new, old_root, new_root, proof in bad:
        with pytest.raises(CheckFailed):
            verify_consistency(old, new, old_root, new_root, proof)


def test_inclusion_in_impossible_trees_is_refused() -> None:
    for index, size in ((0, 0), (1, 0), (2, 1)):
        with pytest.raises(CheckFailed):
            verify_inclusion(index, size, SOME_HASH, [], EMPTY_ROOT)
    with pytest.raises(CheckFailed):  # wrong hash size
        verify_inclusion(0, 1, b"", [], b"")


def test_a_leaf_cannot_pose_as_an_interior_node_nor_the_reverse() -> None:
    """Second-preimage resistance from the 0x00/0x01 prefixes (RFC 6962 section 2.1)."""
    a, b = REFERENCE.nodes[(0, 0)], REFERENCE.nodes[(0, 1)]
    parent = REFERENCE.nodes[(1, 0)]  # H(0x01 || a || b)
    # An interior node presented as a leaf: its children's bytes, as leaf data, do not hash
    # to it, so "leaf 0 of the 2-node tree (parent, sibling)" does not verify.
    assert client_check.hash_leaf(a + b) != parent
    with pytest.raises(CheckFailed):
        verify_inclusion(0, 2, client_check.hash_leaf(a + b), [REFERENCE.nodes[(1, 1)]], ROOTS[4])
    # A leaf presented as an interior node: a tree whose first leaf is the 64 bytes a||b,
    # and a claim that the leaf "" (hash a) sits under it with sibling b.
    x, y = a + b, b"y"
    root = naive_mth([x, y])
    with pytest.raises(CheckFailed):
        verify_inclusion(0, 3, client_check.hash_leaf(LEAVES[0]), [b, merkle.leaf_hash(y)], root)


def test_leaf_encodings_agree() -> None:
    from ledger.audit.leaf import decode_leaf, encode_leaf

    args = (42, "0b6f3e2c-3c11-4f0e-9a53-3d1a5c7b9e01", 7, "ledger.domain:X.Y", b"\x00\xffstate")
    assert encode_leaf(*args) == client_check.encode_leaf(*args)
    assert decode_leaf(encode_leaf(*args)) == args
    assert encode_leaf(*args).hex().startswith("01" + "000000000000002a" + "0024")


# --- corrupted proofs, after Trillian's corruptInclusionProof / corruptConsistencyProof ------

Probe = tuple[str, Callable[[], None]]


def corrupt_inclusion(
    index: int, size: int, leaf: bytes, proof: list[bytes], root: bytes
) -> list[Probe]:
    def probe(i: int, n: int, lf: bytes, p: list[bytes], r: bytes) -> Callable[[], None]:
        return lambda: verify_inclusion(i, n, lf, p, r)

    probes: list[Probe] = [
        ("index - 1", probe(index - 1, size, leaf, proof, root)),
        ("index + 1", probe(index + 1, size, leaf, proof, root)),
        ("index ^ 2", probe(index ^ 2, size, leaf, proof, root)),
        ("size * 2", probe(index, size * 2, leaf, proof, root)),
        ("size / 2", probe(index, size // 2, leaf, proof, root)),
        ("wrong leaf", probe(index, size, b"WrongLeaf", proof, root)),
        ("empty root", probe(index, size, leaf, proof, EMPTY_ROOT)),
        ("random root", probe(index, size, leaf, proof, SOME_HASH)),
        ("trailing garbage", probe(index, size, leaf, [*proof, b""], root)),
        ("trailing root", probe(index, size, leaf, [*proof, root], root)),
        ("preceding garbage", probe(index, size, leaf, [b"", *proof], root)),
        ("preceding root", probe(index, size, leaf, [root, *proof], root)),
    ]
    for i in range(len(proof)):
        wrong = list(proof)
        wrong[i] = bytes([wrong[i][0] ^ 8]) + wrong[i][1:]
        probes.append((f"proof[{i}] bit 3", probe(index, size, leaf, wrong, root)))
    if proof:
        probes.append(("removed component", probe(index, size, leaf, proof[:-1], root)))
    if len(proof) > 1:
        wrong = [proof[0], SOME_HASH, *proof[1:]]
        probes.append(("inserted component", probe(index, size, leaf, wrong, root)))
    return probes


def corrupt_consistency(
    old: int, new: int, old_root: bytes, new_root: bytes, proof: list[bytes]
) -> list[Probe]:
    def probe(m: int, n: int, r1: bytes, r2: bytes, p: list[bytes]) -> Callable[[], None]:
        return lambda: verify_consistency(m, n, r1, r2, p)

    probes: list[Probe] = [
        ("old - 1", probe(old - 1, new, old_root, new_root, proof)),
        ("old + 1", probe(old + 1, new, old_root, new_root, proof)),
        ("old ^ 2", probe(old ^ 2, new, old_root, new_root, proof)),
        ("new * 2", probe(old, new * 2, old_root, new_root, proof)),
        ("new / 2", probe(old, new // 2, old_root, new_root, proof)),
        ("wrong old root", probe(old, new, b"WrongRoot", new_root, proof)),
        ("wrong new root", probe(old, new, old_root, b"WrongRoot", proof)),
        ("swapped roots", probe(old, new, new_root, old_root, proof)),
        ("empty proof", probe(old, new, old_root, new_root, [])),
        ("trailing garbage", probe(old, new, old_root, new_root, [*proof, b""])),
        ("trailing old root", probe(old, new, old_root, new_root, [*proof, old_root])),
        ("trailing new root", probe(old, new, old_root, new_root, [*proof, new_root])),
        ("preceding garbage", probe(old, new, old_root, new_root, [b"", *proof])),
        ("preceding old root", probe(old, new, old_root, new_root, [old_root, *proof])),
        ("preceding new root", probe(old, new, old_root, new_root, [new_root, *proof])),
        ("preceding proof[0]", probe(old, new, old_root, new_root, [proof[0], *proof])),
        ("truncated", probe(old, new, old_root, new_root, proof[:-1])),
    ]
    for i in range(len(proof)):
        wrong = list(proof)
        wrong[i] = bytes([wrong[i][0] ^ 16]) + wrong[i][1:]
        probes.append((f"proof[{i}] bit 4", probe(old, new, old_root, new_root, wrong)))
    return probes


# --- property test against a naive transcription of RFC 9162 ---------------------------------


def naive_mth(leaves: list[bytes]) -> bytes:
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + naive_mth(leaves[:k]) + naive_mth(leaves[k:])).digest()


def naive_path(m: int, leaves: list[bytes]) -> list[bytes]:
    n = len(leaves)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*naive_path(m, leaves[:k]), naive_mth(leaves[k:])]
    return [*naive_path(m - k, leaves[k:]), naive_mth(leaves[:k])]


def naive_subproof(m: int, leaves: list[bytes], whole: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if whole else [naive_mth(leaves)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*naive_subproof(m, leaves[:k], whole), naive_mth(leaves[k:])]
    return [*naive_subproof(m - k, leaves[k:], False), naive_mth(leaves[:k])]


@st.composite
def tree_and_points(draw: st.DrawFn) -> tuple[list[bytes], int, int, int]:
    size = draw(st.integers(min_value=1, max_value=130))
    leaves = [i.to_bytes(4, "big") + b"x" * (i % 5) for i in range(size)]
    index = draw(st.integers(min_value=0, max_value=size - 1))
    old = draw(st.integers(min_value=0, max_value=size))
    return leaves, size, index, old


@settings(max_examples=150, deadline=None)
@given(tree_and_points())
def test_proofs_agree_with_a_naive_implementation(
    case: tuple[list[bytes], int, int, int],
) -> None:
    leaves, size, index, old = case
    tree = MemoryTree(leaves)
    root = naive_mth(leaves)
    assert tree.root(size) == root
    assert client_check.root_from_leaf_hashes(merkle.leaf_hash(x) for x in leaves) == (size, root)

    path = tree.inclusion(index, size)
    assert path == naive_path(index, leaves)
    verify_inclusion(index, size, merkle.leaf_hash(leaves[index]), path, root)

    proof = tree.consistency(old, size)
    assert proof == (naive_subproof(old, leaves, True) if 0 < old < size else [])
    verify_consistency(old, size, naive_mth(leaves[:old]), root, proof)
    if 0 < old < size:
        with pytest.raises(CheckFailed):
            other = naive_mth([*leaves[: old - 1], b"forged"])
            verify_consistency(old, size, other, root, proof)
