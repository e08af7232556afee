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
long-running processes on a timer and every N events (`head_signer.py`). Every head is
published outside the database (`publication.py`) and kept for ever; a head is never issued
for a tree that does not extend the latest signed and published heads, nor over a leaf
without the ledger's MAC.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ledger.audit import client_check, merkle
from ledger.audit.leaf_mac import leaf_key, leaf_mac, mac_holds
from ledger.signing import LedgerSigner, signed_by

if TYPE_CHECKING:
    from ledger.audit.publication import PublishedHeads, _Locked
    from ledger.audit.storage import AuditStore

log = logging.getLogger("ledger.audit")

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
        return signed_by(public_key_pem, self.key_id, self.signed_bytes(), self.signature)

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
    """The stored tree is not an extension of the latest signed or published head (it was
    truncated or rewritten), or a leaf lacks the ledger's MAC (it was appended by someone
    without the ledger's key): signing it would vouch for a forged history. Run
    `ledger verify`."""


class PublicationError(Exception):
    """The publication file cannot be read or written, or its last head is not this
    ledger's; the message says which. Signing stops until someone looks."""


LEAF_PAGE = 50_000


def issue_tree_head(
    store: AuditStore,
    signer: LedgerSigner,
    now: datetime | None = None,
    *,
    published: PublishedHeads | None = None,
) -> TreeHead:
    """The latest signed tree head, issuing a new one first if the log has grown.

    Before signing, the tree is checked to extend the newest head in the database (whose
    signature is checked: the heads table is as writable as the log) and, with
    `published`, the last published head — an RFC 9162 consistency proof from the stored
    tree each — and every leaf after those heads must carry the ledger's MAC. So the ledger
    never signs a forked history, nor leaves someone appended without its key. With
    `published`, every new head is appended there (fsynced) before it is stored, all of
    it under the file's lock.
    """
    if published is None:
        return _issue(store, signer, now, None)
    with published.locked() as file:
        return _issue(store, signer, now, file)


def _issue(
    store: AuditStore, signer: LedgerSigner, now: datetime | None, file: _Locked | None
) -> TreeHead:
    public_key = signer.public_key_pem()
    size = store.size()
    anchors: list[tuple[str, TreeHead]] = []
    latest = store.latest_tree_head()
    if latest is not None:
        if not latest.verify(public_key):
            raise RefusedToSign(
                f"the newest tree head in the database (size {latest.tree_size}) is not signed "
                "by this ledger's key: the heads table was altered"
            )
        anchors.append(("signed tree head", latest))
    last_published: TreeHead | None = None
    if file is not None:
        try:
            last_published = file.latest(public_key)
        except PublicationError as exc:
            raise RefusedToSign(str(exc)) from None
        if last_published is not None:
            anchors.append((f"tree head published in {file.path}", last_published))
    root = store.root(size)
    for label, anchor in anchors:
        _check_extends(store, label, anchor, size, root)
    _check_macs(store, signer, max((a.tree_size for _, a in anchors), default=0), size)
    head = next((a for _, a in anchors if a.tree_size == size), None)
    if head is None:
        head = TreeHead.issue(size, root, signer, now)
    if file is not None and (last_published is None or last_published.tree_size < size):
        file.append(head)
    if latest is not None and latest.tree_size == size:
        return latest
    return store.add_tree_head(head)


def _check_extends(store: AuditStore, label: str, anchor: TreeHead, size: int, root: bytes) -> None:
    if anchor.tree_size > size:
        raise RefusedToSign(
            f"the log holds {size} leaves but the {label} of size {anchor.tree_size} covers more"
        )
    if anchor.tree_size == size:
        if root != anchor.root_hash:
            raise RefusedToSign(
                f"the tree of size {size} no longer has the root signed in the {label}"
            )
        return
    proof = store.range_hashes(merkle.consistency_ranges(anchor.tree_size, size))
    try:
        client_check.verify_consistency(anchor.tree_size, size, anchor.root_hash, root, proof)
    except client_check.CheckFailed as exc:
        raise RefusedToSign(
            f"the tree of size {size} does not extend the {label} of size {anchor.tree_size}: {exc}"
        ) from None


def _check_macs(store: AuditStore, signer: LedgerSigner, start: int, end: int) -> None:
    """Every leaf not yet covered by a signed head must be the ledger's own."""
    key = leaf_key(signer)
    for page in range(start, end, LEAF_PAGE):
        for index, position, hashed, mac in store.leaf_macs(page, min(end, page + LEAF_PAGE)):
            if not mac_holds(key, index, hashed, mac):
                what = "has no MAC" if mac is None else "has a MAC that does not hold"
                raise RefusedToSign(
                    f"leaf {index} (position {position}) {what}: it was written without the "
                    "ledger's key (appended or rewritten in the database)"
                )


def authenticate_legacy_leaves(
    store: AuditStore, signer: LedgerSigner, published: PublishedHeads
) -> int:
    """Give leaves written before leaves carried a MAC their MAC, once. Returns how many.

    Only while this ledger has published no head (heads are published only by code that
    writes MACs, so a store with a publication has nothing legitimately without one: a
    MAC-less leaf there was written by someone without the key, and stays MAC-less for
    `ledger verify` and the signer to refuse). The leaves are checked against the newest
    signed head first (their hashes must fold to its root); leaves after it are trusted
    on first use, which is logged.
    """
    first = store.first_without_mac()
    if first is None:
        return 0
    public_key = signer.public_key_pem()
    if published.latest(public_key) is not None:
        log.error(
            "leaf %d and maybe others have no MAC although this ledger publishes its tree "
            "heads: they were written without the ledger's key; run `ledger verify`",
            first,
        )
        return 0
    latest = store.latest_tree_head()
    if latest is not None:
        if not latest.verify(public_key):
            log.error("leaf MACs not backfilled: the newest tree head's signature does not hold")
            return 0
        with store.snapshot():
            size, root = client_check.root_from_leaf_hashes(store.leaf_hashes(latest.tree_size))
        if (size, root) != (latest.tree_size, latest.root_hash):
            log.error(
                "leaf MACs not backfilled: the stored leaves do not hash to the tree head of "
                "size %d; run `ledger verify`",
                latest.tree_size,
            )
            return 0
    key = leaf_key(signer)
    covered = latest.tree_size if latest is not None else 0
    done = trusted = 0
    while page := store.without_mac(LEAF_PAGE):  # each page leaves the partial index
        store.set_macs([(index, leaf_mac(key, index, hashed)) for index, hashed in page])
        done += len(page)
        trusted += sum(1 for index, _ in page if index >= covered)
    log.warning(
        "authenticated %d leaves written before leaves carried a MAC; %d of them after the "
        "newest signed tree head (size %d) were trusted on first use",
        done,
        trusted,
        covered,
    )
    return done
