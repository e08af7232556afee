"""The secret behind every lookup key derived from personal data (DESIGN invariant 7).

Exact lookups (by email, phone, external id) and duplicate-detection blocking keys are
stored as HMAC-SHA256 digests keyed with this secret, never as plain or unkeyed hashes: an
unkeyed hash of an email or a phone number is reversed by trying every candidate, a keyed
one is not without the key. The key lives in an owner-only file in the data directory
(created on first use, like the KEK file), apart from the database, so a dump alone cannot
be brute-forced. Every host serving one ledger needs the same file.

Each digest is domain-separated by a `kind` ("email", "phone", ...), so equal text used
for two purposes gives unrelated digests. Rotating the key means rebuilding the projections
that store digests (`ledger rebuild`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from pathlib import Path

from ledger.config import ConfigError
from ledger.signing import check_private_file, create_private_file

INDEX_KEY_BYTES = 32


class IndexKeyError(ConfigError):
    """The index key file is malformed (names the file, never its content)."""


class IndexKey:
    def __init__(self, secret: bytes) -> None:
        if len(secret) != INDEX_KEY_BYTES:
            raise IndexKeyError(f"an index key is {INDEX_KEY_BYTES} bytes")
        self._secret = secret

    @classmethod
    def load_or_create(cls, path: Path) -> IndexKey:
        if not path.exists():
            encoded = base64.b64encode(secrets.token_bytes(INDEX_KEY_BYTES)) + b"\n"
            create_private_file(path, encoded)  # loses a race gracefully: then read theirs
        check_private_file(path)
        try:
            secret = base64.b64decode(path.read_bytes().strip(), validate=True)
        except (binascii.Error, ValueError):
            raise IndexKeyError(f"{path} is not a base64 index key") from None
        if len(secret) != INDEX_KEY_BYTES:
            raise IndexKeyError(f"{path} does not hold a {INDEX_KEY_BYTES}-byte key")
        return cls(secret)

    def digest(self, kind: str, value: str) -> bytes:
        """HMAC-SHA256(key, kind ‖ 0x00 ‖ value): `value` must already be canonical."""
        return hmac.new(
            self._secret, kind.encode() + b"\x00" + value.encode("utf-8"), hashlib.sha256
        ).digest()

    def __repr__(self) -> str:
        return "IndexKey(<secret>)"
