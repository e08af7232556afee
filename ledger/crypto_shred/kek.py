"""Key-encryption keys (KEKs): what wraps every customer's data key at rest.

Data keys are never stored in the clear; they are stored wrapped by a KEK held elsewhere, so
a copy of the key store alone (a backup, a dump, a stolen disk) opens nothing. The provider
is a protocol so that a KMS or Vault transit engine can replace the local key file without
touching the key store: it only ever asks for "wrap this", "unwrap that".

Rotating the KEK and re-wrapping (`KeyStore.rewrap_all`) then retiring the old KEK also
makes every leftover copy of a wrapped data key useless — in backups, in database free space,
in write-ahead logs — which is what finally shreds a destroyed key everywhere.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ledger.signing import check_private_file, create_private_file, replace_private_file

KEK_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16


class KeyUnwrapError(Exception):
    """A wrapped key could not be opened: unknown KEK id, wrong context (the wrapped key
    was moved to another customer or key id) or altered bytes. Never carries key bytes."""


class KeyFileError(ValueError):
    """The local KEK file is malformed or an operation on it is not allowed. Names the
    file and key ids only."""


@runtime_checkable
class KekProvider(Protocol):
    """Wraps and unwraps data keys. `context` is authenticated but not secret: it binds a
    wrapped key to the one place it belongs (customer id and key id)."""

    def active_kek_id(self) -> str: ...

    def wrap(self, dek: bytes, context: bytes) -> tuple[str, bytes]:
        """Wrap under the active KEK; returns (kek_id, wrapped)."""
        ...

    def unwrap(self, kek_id: str, wrapped: bytes, context: bytes) -> bytes:
        """Raises KeyUnwrapError for an unknown KEK, a wrong context or altered bytes."""
        ...


@runtime_checkable
class RotatableKekProvider(KekProvider, Protocol):
    """A provider this process can rotate itself (the local key file can; a KMS may rotate
    on its own schedule instead). Narrow with `isinstance` before offering rotation."""

    def rotate(self) -> str:
        """Add a new KEK and make it active; returns its id."""
        ...

    def retire(self, kek_id: str) -> None:
        """Remove a non-active KEK once nothing is wrapped under it."""
        ...

    def kek_ids(self) -> list[str]: ...


@dataclass(frozen=True)
class _Keyring:
    active: str
    keys: dict[str, bytes] = field(repr=False)

    def to_json(self) -> bytes:
        document = {
            "active": self.active,
            "keys": {kid: base64.b64encode(k).decode("ascii") for kid, k in self.keys.items()},
        }
        return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes, path: Path) -> _Keyring:
        try:
            document = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise KeyFileError(f"{path} is not a JSON KEK keyring") from None
        if not isinstance(document, dict) or set(document) != {"active", "keys"}:
            raise KeyFileError(f'{path} must hold exactly {{"active": id, "keys": {{id: key}}}}')
        active, encoded = document["active"], document["keys"]
        if not isinstance(encoded, dict) or not encoded:
            raise KeyFileError(f"{path}: 'keys' must be a non-empty object")
        keys: dict[str, bytes] = {}
        for kid, value in encoded.items():
            try:
                key = base64.b64decode(value, validate=True)
            except (binascii.Error, TypeError, ValueError):
                raise KeyFileError(f"{path}: KEK {kid!r} is not valid base64") from None
            if len(key) != KEK_BYTES:
                raise KeyFileError(f"{path}: KEK {kid!r} is not {KEK_BYTES} bytes")
            keys[kid] = key
        if not isinstance(active, str) or active not in keys:
            raise KeyFileError(f"{path}: the active KEK id is not among the keys")
        return cls(active=active, keys=keys)


def _new_kek_id(existing: dict[str, bytes]) -> str:
    """Date-prefixed so an operator can tell old KEKs from new at a glance."""
    while True:
        kid = f"{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(4)}"
        if kid not in existing:
            return kid


class LocalKeyFileProvider:
    """KEKs kept in one owner-only JSON file: `{"active": id, "keys": {id: base64 key}}`.

    The default for a single host. The file is created (mode 0600, directory 0700) when the
    provider is constructed, so a misconfiguration shows at start-up rather than at the first
    registration; a file that group or others can reach is refused. Every change is written
    to a temporary file and renamed into place, so a crash never leaves half a keyring.

    Wrapped form: 12-byte random nonce followed by the AES-256-GCM ciphertext and tag, with
    the caller's context as associated data.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._ring = self._load_or_create()

    # KekProvider ---------------------------------------------------------------------------

    def active_kek_id(self) -> str:
        with self._lock:
            return self._ring.active

    def wrap(self, dek: bytes, context: bytes) -> tuple[str, bytes]:
        with self._lock:
            kek_id, kek = self._ring.active, self._ring.keys[self._ring.active]
        nonce = secrets.token_bytes(NONCE_BYTES)
        return kek_id, nonce + AESGCM(kek).encrypt(nonce, bytes(dek), context)

    def unwrap(self, kek_id: str, wrapped: bytes, context: bytes) -> bytes:
        kek = self._kek(kek_id)
        if len(wrapped) < NONCE_BYTES + TAG_BYTES:
            raise KeyUnwrapError(f"wrapped key under KEK {kek_id!r} is truncated")
        try:
            return AESGCM(kek).decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], context)
        except InvalidTag:
            raise KeyUnwrapError(
                f"wrapped key does not open under KEK {kek_id!r}: "
                "it belongs to another customer or key, or was altered"
            ) from None

    # Administration ------------------------------------------------------------------------

    def kek_ids(self) -> list[str]:
        """All KEK ids held (the active one included), oldest id first."""
        with self._lock:
            return sorted(self._ring.keys)

    def rotate(self) -> str:
        """Add a new KEK and make it active; older KEKs stay for unwrapping until the key
        store has re-wrapped everything (`KeyStore.rewrap_all`) and they are retired."""
        with self._lock:
            ring = self._read()  # pick up changes made by another process
            kid = _new_kek_id(ring.keys)
            ring = _Keyring(active=kid, keys={**ring.keys, kid: AESGCM.generate_key(256)})
            replace_private_file(self.path, ring.to_json())
            self._ring = ring
            return kid

    def retire(self, kek_id: str) -> None:
        """Remove an old KEK for good. Only after `rewrap_all`: anything still wrapped under
        it becomes unreadable — which is also how leftover copies get shredded."""
        with self._lock:
            ring = self._read()
            if kek_id == ring.active:
                raise KeyFileError(f"KEK {kek_id!r} is the active one; rotate before retiring it")
            if kek_id not in ring.keys:
                raise KeyFileError(f"KEK {kek_id!r} is not in {self.path}")
            keys = {kid: key for kid, key in ring.keys.items() if kid != kek_id}
            ring = _Keyring(active=ring.active, keys=keys)
            replace_private_file(self.path, ring.to_json())
            self._ring = ring

    def __repr__(self) -> str:
        return f"LocalKeyFileProvider(path={str(self.path)!r})"

    # Internals -----------------------------------------------------------------------------

    def _kek(self, kek_id: str) -> bytes:
        with self._lock:
            kek = self._ring.keys.get(kek_id)
            if kek is None:
                # Another process may have rotated since we loaded the file.
                self._ring = self._read()
                kek = self._ring.keys.get(kek_id)
        if kek is None:
            raise KeyUnwrapError(f"unknown KEK id {kek_id!r} (retired, or another key file)")
        return kek

    def _load_or_create(self) -> _Keyring:
        if not self.path.exists():
            kid = _new_kek_id({})
            ring = _Keyring(active=kid, keys={kid: AESGCM.generate_key(256)})
            if create_private_file(self.path, ring.to_json()):
                return ring
            # Lost a race with another process creating it: use theirs.
        return self._read()

    def _read(self) -> _Keyring:
        check_private_file(self.path)
        return _Keyring.from_json(self.path.read_bytes(), self.path)
