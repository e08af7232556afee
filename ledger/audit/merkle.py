"""RFC 6962 / RFC 9162 Merkle tree arithmetic: hashing, the perfect subtrees a range is made
of, which ranges an inclusion or consistency proof consists of, and an append-only frontier.

Pure: no I/O. The store keeps the hash of every *perfect* subtree (every node whose leaves
are all present), Trillian-style; every hash a proof or a root needs is then a fold of at
most ~log2(n) stored nodes, so proofs and tree heads cost a handful of lookups whatever the
size of the log. A node is named `(level, index)`: it covers leaves
`[index * 2**level, (index + 1) * 2**level)`; level 0 is a leaf.

Hashing (RFC 6962 section 2.1, RFC 9162 section 2.1.1): leaf `SHA-256(0x00 || leaf)`,
interior node `SHA-256(0x01 || left || right)`, empty tree `SHA-256("")`. The distinct
prefixes are what stop a leaf from being passed off as an interior node and vice versa.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()

Node = tuple[int, int]  # (level, index)
Range = tuple[int, int]  # leaves [start, end)


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def split_point(size: int) -> int:
    """RFC 6962's k: the largest power of two smaller than `size` (size >= 2)."""
    if size < 2:
        raise ValueError("a split needs at least two leaves")
    return 1 << ((size - 1).bit_length() - 1)


def last_leaf(node: Node) -> int:
    """The index of the leaf whose arrival completes `node` (how the store keys nodes, so
    that stored order is the order in which nodes come into existence)."""
    level, index = node
    return ((index + 1) << level) - 1


def perfect_subtrees(start: int, end: int) -> list[Node]:
    """The perfect subtrees that make up leaves [start, end), left to right, each as large as
    the alignment allows. For the ranges RFC 6962 recursion produces (start is a multiple of
    a power of two at least end - start) they shrink strictly from left to right, and the
    range's hash is their right fold (see `fold`)."""
    if not 0 <= start <= end:
        raise ValueError(f"bad leaf range [{start}, {end})")
    nodes: list[Node] = []
    while start < end:
        level = (end - start).bit_length() - 1
        while start % (1 << level):
            level -= 1
        nodes.append((level, start >> level))
        start += 1 << level
    return nodes


def peaks(size: int) -> list[Node]:
    """The perfect subtrees of a tree of `size` leaves (one per set bit of `size`)."""
    return perfect_subtrees(0, size)


def fold(hashes: Sequence[bytes]) -> bytes:
    """MTH of a range from the hashes of its perfect subtrees, largest first:
    H(p0, H(p1, ... H(pk-1, pk))), which is exactly RFC 6962's recursive split."""
    if not hashes:
        return EMPTY_ROOT
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = node_hash(left, result)
    return result


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """The ranges whose hashes form PATH(index, D[size]) (RFC 9162 section 2.1.3.1), in
    proof order: the sibling nearest the leaf first."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")
    path: list[Range] = []
    start, end = 0, size
    while end - start > 1:
        k = split_point(end - start)
        if index < start + k:
            path.append((start + k, end))
            end = start + k
        else:
            path.append((start, start + k))
            start += k
    path.reverse()
    return path


def consistency_ranges(old_size: int, new_size: int) -> list[Range]:
    """The ranges whose hashes form PROOF(old_size, D[new_size]) (RFC 9162 section
    2.1.4.1), in proof order. Empty when the sizes are equal or the old tree is empty."""
    if not 0 <= old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to size {new_size}")
    if old_size in (0, new_size):
        return []
    proof: list[Range] = []
    m, start, end, whole = old_size, 0, new_size, True
    # SUBPROOF(m, D[start:end], whole), unrolled; each step adds one hash at the front of
    # what the deeper steps add, so collect and reverse.
    while True:
        size = end - start
        if m == size:
            if not whole:
                proof.append((start, end))
            break
        k = split_point(size)
        if m <= k:
            proof.append((start + k, end))
            end = start + k
        else:
            proof.append((start, start + k))
            m -= k
            start += k
            whole = False
    proof.reverse()
    return proof


def nodes_for(ranges: Iterable[Range]) -> set[Node]:
    """Every stored node needed to hash the given ranges (to fetch them in one query)."""
    needed: set[Node] = set()
    for start, end in ranges:
        needed.update(perfect_subtrees(start, end))
    return needed


def range_hashes(ranges: Sequence[Range], nodes: Mapping[Node, bytes]) -> list[bytes]:
    return [fold([nodes[n] for n in perfect_subtrees(start, end)]) for start, end in ranges]


@dataclass
class Frontier:
    """The right edge of a growing tree: the hashes of its peaks, largest first. Appending
    a leaf merges equal-sized peaks and reports every perfect subtree it completes, so a
    writer can store them and a verifier can compare them with what was stored."""

    size: int = 0
    hashes: list[bytes] = field(default_factory=list)

    @classmethod
    def of(cls, size: int, peak_hashes: Sequence[bytes]) -> Frontier:
        if len(peak_hashes) != size.bit_count():
            raise ValueError(f"a tree of size {size} has {size.bit_count()} peaks")
        return cls(size, list(peak_hashes))

    def append(self, hashed_leaf: bytes, completed: Callable[[Node, bytes], None]) -> None:
        index = self.size
        current = hashed_leaf
        level = 0
        # The trailing one-bits of the new leaf's index are the peaks it completes.
        while index >> level & 1:
            current = node_hash(self.hashes.pop(), current)
            level += 1
            completed((level, index >> level), current)
        self.hashes.append(current)
        self.size += 1

    def root(self) -> bytes:
        return fold(self.hashes)


def root_of(leaf_hashes: Iterable[bytes]) -> bytes:
    frontier = Frontier()
    for hashed in leaf_hashes:
        frontier.append(hashed, _ignore)
    return frontier.root()


def _ignore(node: Node, hashed: bytes) -> None:
    return None
