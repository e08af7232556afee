"""Independent checks for auditors: copy this one file, trust nothing of the server.

It depends on the Python standard library (hashlib for SHA-256) and, for Ed25519 signatures
only, on `cryptography`. Nothing here imports the ledger, so an auditor can run it against
the exported data and the ledger's public key alone:

    python client_check.py tree-head HEAD.json --public-key ledger.pub
    python client_check.py inclusion PROOF.json --public-key ledger.pub
    python client_check.py consistency PROOF.json --public-key ledger.pub
    python client_check.py export EVENTS.jsonl --tree-head HEAD.json --public-key ledger.pub

Keep the heads you check, and pass the newest one you kept as `--saved-head SAVED.json`:
a signature only says the ledger signed a root, and someone who rewrote the history and got
it signed again has a valid signature too. With a saved head, `consistency` refuses a proof
that does not start from it, `export` checks the export against it as well, and
`tree-head` refuses a head that contradicts it (same size, other root; or smaller).

(`ledger tree-head`, `ledger prove`, `ledger consistency` and `ledger events --json` produce
those files.) Each exits 0 when the check holds and 1 otherwise, naming what failed.

Formats, fixed and versioned:
* leaf (one stored event): u8 1 | u64 position | u16 len, originator id (UTF-8) | u64 version
  | u16 len, topic (UTF-8) | u32 len, stored state bytes — all integers big-endian;
* hashes (RFC 6962/9162): leaf SHA-256(0x00 || leaf), node SHA-256(0x01 || left || right),
  empty tree SHA-256("");
* signed tree head: Ed25519 over b"ledger.tree-head.v1" 0x00 | u64 tree size |
  u64 timestamp (ms since the Unix epoch, UTC) | 32-byte root hash.
* signed restore statement (a line of the publication file, `"type": "ledger.restore.v1"`):
  Ed25519 over b"ledger.restore.v1" 0x00 | u64 restored size | u64 size of the last head
  published before the restore | its 32-byte root (the empty tree's for none) | u64 timestamp
  (ms) | u32 len, reason (UTF-8). It says the ledger's databases were restored to a backup
  holding `restored_size` events: heads published after it extend the newest head at or below
  that size, not the abandoned one. Check one with
  `python client_check.py restore STATEMENT.json --public-key ledger.pub [--saved-head S]`:
  a saved head above the restored size is in the abandoned range, and `consistency` from it
  to a newer head fails by design (save the newest head at or below the restored size).
The proof checks are RFC 9162 sections 2.1.3.2 (inclusion) and 2.1.4.2 (consistency).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import struct
import sys
from collections.abc import Iterable, Sequence
from typing import Any

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
TREE_HEAD_TYPE = "ledger.tree-head.v1"
TREE_HEAD_DOMAIN = TREE_HEAD_TYPE.encode("ascii") + b"\x00"
RESTORE_TYPE = "ledger.restore.v1"
RESTORE_DOMAIN = RESTORE_TYPE.encode("ascii") + b"\x00"


class CheckFailed(Exception):
    """A check did not hold; the message says which and why."""


# Hashing -----------------------------------------------------------------------------------


def encode_leaf(position: int, originator_id: str, version: int, topic: str, state: bytes) -> bytes:
    oid, top = originator_id.encode("utf-8"), topic.encode("utf-8")
    return (
        struct.pack(">BQH", 1, position, len(oid))
        + oid
        + struct.pack(">QH", version, len(top))
        + top
        + struct.pack(">I", len(state))
        + state
    )


def hash_leaf(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def hash_children(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_leaf_hashes(leaf_hashes: Iterable[bytes]) -> tuple[int, bytes]:
    """(size, root) of the tree over the given leaf hashes, in one pass and O(log n) memory."""
    stack: list[bytes] = []
    size = 0
    for hashed in leaf_hashes:
        _push(stack, size, hashed)
        size += 1
    return size, _fold(stack)


def _push(stack: list[bytes], index: int, hashed: bytes) -> None:
    """Add leaf `index` to the stack of perfect subtree hashes (largest first)."""
    while index & 1:
        hashed = hash_children(stack.pop(), hashed)
        index >>= 1
    stack.append(hashed)


def _fold(stack: list[bytes]) -> bytes:
    if not stack:
        return EMPTY_ROOT
    root = stack[-1]
    for left in reversed(stack[:-1]):
        root = hash_children(left, root)
    return root


# Proofs (RFC 9162) ---------------------------------------------------------------------------


def _check_hashes(*hashes: bytes) -> None:
    for value in hashes:
        if len(value) != HASH_SIZE:
            raise CheckFailed(f"a hash has {len(value)} bytes, expected {HASH_SIZE}")


def verify_inclusion(
    leaf_index: int, tree_size: int, leaf_hash: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """RFC 9162 2.1.3.2. Raises CheckFailed unless `proof` shows the leaf with hash
    `leaf_hash` at `leaf_index` in the tree of `tree_size` leaves whose root is `root`."""
    _check_hashes(leaf_hash, root, *proof)
    if not 0 <= leaf_index < tree_size:
        raise CheckFailed(f"leaf index {leaf_index} is outside a tree of size {tree_size}")
    fn, sn, r = leaf_index, tree_size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            raise CheckFailed("inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = hash_children(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = hash_children(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise CheckFailed("inclusion proof is shorter than the tree is deep")
    if r != root:
        raise CheckFailed("inclusion proof does not lead to the root")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 2.1.4.2. Raises CheckFailed unless `proof` shows that the tree of `new_size`
    leaves with root `new_root` extends the tree of `old_size` leaves with root `old_root`
    (nothing in the first `old_size` leaves changed, was removed or reordered)."""
    _check_hashes(old_root, new_root, *proof)
    if not 0 <= old_size <= new_size:
        raise CheckFailed(f"size {new_size} cannot extend size {old_size}")
    if old_size == new_size:
        if proof:
            raise CheckFailed("equal sizes need an empty proof")
        if old_root != new_root:
            raise CheckFailed("two tree heads of the same size have different roots")
        return
    if old_size == 0:
        if proof:
            raise CheckFailed("an empty old tree needs an empty proof")
        if old_root != EMPTY_ROOT:
            raise CheckFailed("a tree of size 0 must have the empty root")
        return
    if not proof:
        raise CheckFailed("consistency proof is empty")
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # an exact power of two is its own subtree
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise CheckFailed("consistency proof is longer than needed")
        if fn & 1 or fn == sn:
            fr = hash_children(c, fr)
            sr = hash_children(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = hash_children(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise CheckFailed("consistency proof is shorter than needed")
    if fr != old_root:
        raise CheckFailed("consistency proof does not lead to the old root")
    if sr != new_root:
        raise CheckFailed("consistency proof does not lead to the new root")


# Signed tree heads ---------------------------------------------------------------------------


def tree_head_message(tree_size: int, timestamp_ms: int, root: bytes) -> bytes:
    _check_hashes(root)
    return TREE_HEAD_DOMAIN + struct.pack(">QQ", tree_size, timestamp_ms) + root


def parse_tree_head(data: dict[str, Any]) -> tuple[int, int, bytes, bytes]:
    """(tree_size, timestamp_ms, root, signature) from a tree head's JSON object."""
    try:
        if data.get("type") != TREE_HEAD_TYPE:
            raise CheckFailed(f"not a {TREE_HEAD_TYPE} object")
        size, stamp = data["tree_size"], data["timestamp_ms"]
        if not (isinstance(size, int) and isinstance(stamp, int)) or size < 0 or stamp < 0:
            raise CheckFailed("tree_size and timestamp_ms must be non-negative integers")
        root = bytes.fromhex(data["root_hash"])
        signature = base64.b64decode(data["signature"], validate=True)
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise CheckFailed(f"malformed tree head ({type(exc).__name__}: {exc})") from None
    _check_hashes(root)
    return size, stamp, root, signature


def verify_tree_head(data: dict[str, Any], public_key_pem: str) -> tuple[int, bytes]:
    """Check a tree head's Ed25519 signature; returns (tree_size, root)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    size, stamp, root, signature = parse_tree_head(data)
    key = load_pem_public_key(public_key_pem.encode("ascii"))
    if not isinstance(key, Ed25519PublicKey):
        raise CheckFailed("the public key is not an Ed25519 key")
    try:
        key.verify(signature, tree_head_message(size, stamp, root))
    except InvalidSignature:
        raise CheckFailed(f"the signature of the tree head of size {size} is invalid") from None
    return size, root


# Signed restore statements -------------------------------------------------------------------


def restore_message(
    restored_size: int, abandoned_size: int, abandoned_root: bytes, timestamp_ms: int, reason: str
) -> bytes:
    _check_hashes(abandoned_root)
    text = reason.encode("utf-8")
    return (
        RESTORE_DOMAIN
        + struct.pack(">QQ", restored_size, abandoned_size)
        + abandoned_root
        + struct.pack(">QI", timestamp_ms, len(text))
        + text
    )


def parse_restore_statement(data: dict[str, Any]) -> tuple[int, int, bytes, int, str, bytes]:
    """(restored_size, abandoned_size, abandoned_root, timestamp_ms, reason, signature)."""
    try:
        if data.get("type") != RESTORE_TYPE:
            raise CheckFailed(f"not a {RESTORE_TYPE} object")
        sizes = data["restored_size"], data["abandoned_size"], data["timestamp_ms"]
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in sizes):
            raise CheckFailed("restored_size, abandoned_size and timestamp_ms must be integers")
        reason = data["reason"]
        if not isinstance(reason, str):
            raise CheckFailed("reason must be a string")
        root = bytes.fromhex(data["abandoned_root"])
        signature = base64.b64decode(data["signature"], validate=True)
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise CheckFailed(f"malformed restore statement ({type(exc).__name__}: {exc})") from None
    _check_hashes(root)
    return sizes[0], sizes[1], root, sizes[2], reason, signature


def verify_restore_statement(data: dict[str, Any], public_key_pem: str) -> tuple[int, int]:
    """Check a restore statement's signature; returns (restored_size, abandoned_size)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    restored, abandoned, root, stamp, reason, signature = parse_restore_statement(data)
    key = load_pem_public_key(public_key_pem.encode("ascii"))
    if not isinstance(key, Ed25519PublicKey):
        raise CheckFailed("the public key is not an Ed25519 key")
    try:
        key.verify(signature, restore_message(restored, abandoned, root, stamp, reason))
    except InvalidSignature:
        raise CheckFailed("the signature of the restore statement is invalid") from None
    return restored, abandoned


def check_restore_document(
    doc: dict[str, Any], public_key_pem: str, saved: dict[str, Any] | None = None
) -> str:
    """A signed restore statement; with `saved`, whether the saved head was abandoned."""
    restored, abandoned = verify_restore_statement(doc, public_key_pem)
    message = (
        f"the ledger declares a restore to {restored} events; the published heads above it "
        f"(up to size {abandoned}) were abandoned"
    )
    if saved is None:
        return message
    saved_size, _ = verify_tree_head(saved, public_key_pem)
    if saved_size > restored:
        return message + (
            f"; your saved head of size {saved_size} is in the abandoned range: events "
            f"{restored + 1} to {saved_size} it covers are gone from the ledger"
        )
    return message + f"; your saved head of size {saved_size} is kept (newer heads extend it)"


# Checking the ledger's JSON documents ----------------------------------------------------------


def _hashes(items: Sequence[str]) -> list[bytes]:
    try:
        return [bytes.fromhex(item) for item in items]
    except (TypeError, ValueError):
        raise CheckFailed("a proof element is not a hex hash") from None


def check_inclusion_document(doc: dict[str, Any], public_key_pem: str) -> str:
    """`ledger prove --json` output: the leaf's bytes, its path and the signed tree head."""
    size, root = verify_tree_head(doc["tree_head"], public_key_pem)
    try:
        leaf = base64.b64decode(doc["leaf"], validate=True)
    except (TypeError, ValueError, binascii.Error):
        raise CheckFailed("leaf is not base64") from None
    if int(doc["tree_size"]) != size:
        raise CheckFailed("the proof is for another tree size than its tree head")
    position, oid, version, topic, state = _decode_leaf(leaf)
    if encode_leaf(position, oid, version, topic, state) != leaf:
        raise CheckFailed("the leaf is not in the ledger's leaf encoding")
    for name, value in (("position", position), ("version", version), ("topic", topic)):
        if name in doc and doc[name] != value:
            raise CheckFailed(f"the document's {name} differs from the leaf's")
    verify_inclusion(int(doc["leaf_index"]), size, hash_leaf(leaf), _hashes(doc["proof"]), root)
    return f"event {oid} v{version} (position {position}) is leaf {doc['leaf_index']} of {size}"


def check_consistency_document(
    doc: dict[str, Any], public_key_pem: str, saved: dict[str, Any] | None = None
) -> str:
    """`ledger consistency --json` output: two signed tree heads and the proof between them.
    With `saved` (a head the auditor kept), the proof must start from exactly that head:
    otherwise it proves nothing about the history the auditor saw."""
    old_size, old_root = verify_tree_head(doc["old_tree_head"], public_key_pem)
    new_size, new_root = verify_tree_head(doc["new_tree_head"], public_key_pem)
    if saved is not None:
        saved_size, saved_root = verify_tree_head(saved, public_key_pem)
        for size, root in ((old_size, old_root), (new_size, new_root)):
            if size == saved_size and root != saved_root:
                raise CheckFailed(
                    f"the ledger signed another root for size {size} than your saved head: "
                    "the history you saved was rewritten"
                )
        if old_size != saved_size:
            raise CheckFailed(
                f"the proof starts from the tree head of size {old_size}, not from your saved "
                f"head of size {saved_size}: ask for `ledger consistency {saved_size}`"
            )
    verify_consistency(old_size, new_size, old_root, new_root, _hashes(doc["proof"]))
    return f"the tree of size {new_size} extends the tree of size {old_size}"


def check_tree_head_document(
    doc: dict[str, Any], public_key_pem: str, saved: dict[str, Any] | None = None
) -> str:
    """A signed head on its own; with `saved`, it must not contradict the saved head."""
    size, root = verify_tree_head(doc, public_key_pem)
    message = f"tree head of size {size} (root {root.hex()}) is signed"
    if saved is None:
        return message
    saved_size, saved_root = verify_tree_head(saved, public_key_pem)
    if size < saved_size:
        raise CheckFailed(
            f"the head covers {size} events, fewer than your saved head's {saved_size}"
        )
    if size == saved_size and root != saved_root:
        raise CheckFailed(
            f"the ledger signed another root for size {size} than your saved head: "
            "the history you saved was rewritten"
        )
    if size > saved_size:
        message += f"; check `consistency` from your saved head of size {saved_size} to it"
    return message


def check_export(
    lines: Iterable[str],
    head: dict[str, Any],
    public_key_pem: str,
    saved: dict[str, Any] | None = None,
) -> str:
    """`ledger events --json` output from position 0: recompute every leaf, the root over the
    first tree_size of them, and compare it with the signed tree head (and, with `saved`,
    the root over the first events it covers with the saved head's)."""
    size, root = verify_tree_head(head, public_key_pem)
    saved_size, saved_root = verify_tree_head(saved, public_key_pem) if saved else (0, b"")
    if saved is not None and saved_size > size:
        raise CheckFailed(
            f"the tree head covers {size} events, fewer than your saved head's {saved_size}"
        )
    at_saved: list[bytes] = []

    def leaves() -> Iterable[bytes]:
        count = 0
        previous = 0
        for number, line in enumerate(lines, 1):
            if count == size:
                return
            if not line.strip():
                continue
            try:
                event = json.loads(line)
                position = int(event["position"])
                state = base64.b64decode(event["state"], validate=True)
                leaf = encode_leaf(
                    position,
                    str(event["originator_id"]),
                    int(event["version"]),
                    str(event["topic"]),
                    state,
                )
            except (KeyError, TypeError, ValueError, binascii.Error) as exc:
                raise CheckFailed(f"line {number}: not an exported event ({exc})") from None
            if position <= previous:
                raise CheckFailed(f"line {number}: positions must increase (got {position})")
            previous = position
            count += 1
            hashed = hash_leaf(leaf)
            yield hashed
            if count <= saved_size:
                _push(saved_stack, count - 1, hashed)
                if count == saved_size:
                    at_saved.append(_fold(saved_stack))

    saved_stack: list[bytes] = []
    counted, computed = root_from_leaf_hashes(leaves())
    if counted < size:
        raise CheckFailed(f"the export holds {counted} events; the tree head covers {size}")
    if computed != root:
        raise CheckFailed(f"the first {size} exported events do not hash to the signed root")
    if saved is not None and (at_saved or [EMPTY_ROOT])[0] != saved_root:
        raise CheckFailed(
            f"the first {saved_size} exported events do not hash to your saved head's root: "
            "the history you saved was rewritten"
        )
    return f"the first {size} exported events hash to the signed root"


def _decode_leaf(leaf: bytes) -> tuple[int, str, int, str, bytes]:
    try:
        tag, position, n = struct.unpack_from(">BQH", leaf, 0)
        at = 11
        oid = leaf[at : at + n].decode("utf-8")
        at += n
        version, n = struct.unpack_from(">QH", leaf, at)
        at += 10
        topic = leaf[at : at + n].decode("utf-8")
        at += n
        (n,) = struct.unpack_from(">I", leaf, at)
        at += 4
    except (struct.error, UnicodeDecodeError):
        raise CheckFailed("the leaf is not in the ledger's leaf encoding") from None
    if tag != 1:
        raise CheckFailed(f"unknown leaf format {tag}")
    return position, oid, version, topic, leaf[at : at + n]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check the ledger's proofs independently.")
    parser.add_argument(
        "what", choices=["tree-head", "inclusion", "consistency", "export", "restore"]
    )
    parser.add_argument("file", help="the JSON (or, for export, JSON lines) file to check")
    parser.add_argument("--public-key", required=True, help="the ledger's public key (PEM)")
    parser.add_argument("--tree-head", help="export only: the signed tree head to check against")
    parser.add_argument(
        "--saved-head",
        help="a tree head you kept earlier: what is checked must not contradict it",
    )
    args = parser.parse_args(argv)
    try:
        with open(args.public_key, encoding="ascii") as handle:
            public_key = handle.read()
        saved: dict[str, Any] | None = None
        if args.saved_head:
            with open(args.saved_head, encoding="utf-8") as saved_file:
                saved = json.load(saved_file)
            if not isinstance(saved, dict):
                raise CheckFailed("the saved head is not a JSON object")
        with open(args.file, encoding="utf-8") as handle:
            if args.what == "export":
                if not args.tree_head:
                    raise CheckFailed("export needs --tree-head")
                with open(args.tree_head, encoding="utf-8") as head_file:
                    head = json.load(head_file)
                message = check_export(handle, head, public_key, saved)
            else:
                doc = json.load(handle)
                if args.what == "tree-head":
                    message = check_tree_head_document(doc, public_key, saved)
                elif args.what == "restore":
                    message = check_restore_document(doc, public_key, saved)
                elif args.what == "inclusion":
                    message = check_inclusion_document(doc, public_key)
                else:
                    message = check_consistency_document(doc, public_key, saved)
    except (CheckFailed, OSError, ValueError, KeyError) as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"OK: {message}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
