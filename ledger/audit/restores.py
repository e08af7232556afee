"""Signed restore statements: the ledger's own word that its databases were restored to an
earlier point, written to the publication file beside the tree heads.

A restore makes the log shorter than the newest published head. Without a statement that
is exactly what a truncation looks like, so the signer refuses to sign and `ledger verify`
fails, for ever. The statement (signed like a head, see `client_check.restore_message`)
opens a new epoch: from then on the log must extend the newest published head at or below
the restored size, and the heads above it are reported as abandoned, not as missing. A log
shorter than the published head with no statement stays a failure, and a statement can only
be made with the ledger's private key.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ledger.audit import client_check
from ledger.signing import LedgerSigner, signed_by

RESTORE_TYPE = client_check.RESTORE_TYPE


@dataclass(frozen=True)
class RestoreStatement:
    restored_size: int
    abandoned_size: int  # the last published head's size before the restore (0: none)
    abandoned_root: bytes
    timestamp_ms: int
    reason: str
    key_id: str
    signature: bytes

    def signed_bytes(self) -> bytes:
        return client_check.restore_message(
            self.restored_size,
            self.abandoned_size,
            self.abandoned_root,
            self.timestamp_ms,
            self.reason,
        )

    def verify(self, public_key_pem: str) -> bool:
        return signed_by(public_key_pem, self.key_id, self.signed_bytes(), self.signature)

    @property
    def timestamp(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)

    @property
    def lost(self) -> int:
        """How many published events the restore gave up (0: it lost nothing published)."""
        return max(0, self.abandoned_size - self.restored_size)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": RESTORE_TYPE,
            "restored_size": self.restored_size,
            "abandoned_size": self.abandoned_size,
            "abandoned_root": self.abandoned_root.hex(),
            "timestamp_ms": self.timestamp_ms,
            "timestamp": self.timestamp.isoformat().replace("+00:00", "Z"),
            "reason": self.reason,
            "key_id": self.key_id,
            "signature": base64.b64encode(self.signature).decode("ascii"),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RestoreStatement:
        restored, abandoned, root, stamp, reason, signature = client_check.parse_restore_statement(
            data
        )
        key_id = data.get("key_id")
        if not isinstance(key_id, str):
            raise client_check.CheckFailed("key_id must be a string")
        return cls(restored, abandoned, root, stamp, reason, key_id, signature)

    @classmethod
    def issue(
        cls,
        restored_size: int,
        abandoned_size: int,
        abandoned_root: bytes,
        reason: str,
        signer: LedgerSigner,
        now: datetime | None = None,
    ) -> RestoreStatement:
        stamp = int((now or datetime.now(UTC)).timestamp() * 1000)
        unsigned = cls(restored_size, abandoned_size, abandoned_root, stamp, reason, "", b"")
        signature = signer.sign(unsigned.signed_bytes())
        return cls(
            restored_size, abandoned_size, abandoned_root, stamp, reason, signer.key_id(), signature
        )
