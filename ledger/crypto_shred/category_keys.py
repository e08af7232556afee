"""Category keys: one data key per customer *and* data category, so that one category of
one customer (say its contact details, due for destruction after two years without
activity) can be crypto-shredded while the rest (its name, kept for tax law) stays readable.

Granularity: one key per Fides category of a personal profile field
(`ledger.policy.classification`): every personal field has a category of its own, so a
policy rule naming a broader category (`user.contact`, `user.name`) destroys each key it
covers. Non-personal fields (locale, tags) are stored readable and have no key.

Where the keys live: with the customer's own data key, in the same key-store row, wrapped
together under the KEK as one *bundle* (`pack`/`unpack`). Registering a customer therefore
writes one row and makes one KEK call, exactly as before category keys existed (the
registration throughput targets count key writes); destroying a category re-wraps the
bundle without that key and overwrites the row. A key store restored from before the
destruction holds the key again: the log decides (`ErasureRegistry.erased_categories`),
and the re-shred at open re-writes the bundle without it.

A customer registered before category keys existed has a plain 32-byte key (no bundle)
and keeps it until erased: its events keep their single-key format.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ledger.policy.classification import FIELDS, Sensitivity

BUNDLE_MAGIC = b"LCK1"
KEY_BYTES = 32
KEY_ID_BYTES = 16  # ASCII hex of 8 random bytes, as the customer key's id

# The categories that get a key: those of the personal (sealed) profile fields.
KEYED_CATEGORIES: tuple[str, ...] = tuple(
    dict.fromkeys(e.category for e in FIELDS if e.sensitivity is not Sensitivity.NONE)
)
_FIELD_CATEGORY: dict[str, str] = {
    e.field: e.category for e in FIELDS if e.sensitivity is not Sensitivity.NONE
}


class BundleFormatError(ValueError):
    """An unwrapped key bundle is not well formed (names no customer data)."""


@dataclass(frozen=True)
class CategoryKey:
    category: str
    key_id: str
    key: bytes = field(repr=False)


def new_category_keys() -> dict[str, CategoryKey]:
    return {
        category: CategoryKey(category, secrets.token_hex(8), AESGCM.generate_key(256))
        for category in KEYED_CATEGORIES
    }


def key_category_of(field_name: str) -> str | None:
    """The category whose key seals this field; None for a field without one (sealed
    under the customer key)."""
    return _FIELD_CATEGORY.get(field_name)


def pack(base_key: bytes, categories: Mapping[str, CategoryKey]) -> bytes:
    """The plaintext that is wrapped under the KEK: magic, the customer key, then per
    category: name length (1 byte), name, key id, key."""
    parts = [BUNDLE_MAGIC, base_key]
    for name in sorted(categories):
        entry = categories[name]
        encoded = name.encode("ascii")
        if len(encoded) > 255 or len(entry.key_id) != KEY_ID_BYTES or len(entry.key) != KEY_BYTES:
            raise BundleFormatError("a category key does not fit the bundle format")
        parts += [bytes([len(encoded)]), encoded, entry.key_id.encode("ascii"), entry.key]
    return b"".join(parts)


def unpack(payload: bytes) -> tuple[bytes, dict[str, CategoryKey]]:
    """(customer key, category keys); a plain 32-byte key is a pre-category customer."""
    if len(payload) == KEY_BYTES:
        return payload, {}
    if not payload.startswith(BUNDLE_MAGIC) or len(payload) < 4 + KEY_BYTES:
        raise BundleFormatError("the data key has the wrong length")
    base = payload[4 : 4 + KEY_BYTES]
    at, found = 4 + KEY_BYTES, {}
    while at < len(payload):
        size = payload[at]
        end = at + 1 + size + KEY_ID_BYTES + KEY_BYTES
        if end > len(payload):
            raise BundleFormatError("the key bundle is truncated")
        name = payload[at + 1 : at + 1 + size].decode("ascii")
        key_id = payload[at + 1 + size : at + 1 + size + KEY_ID_BYTES].decode("ascii")
        found[name] = CategoryKey(name, key_id, payload[end - KEY_BYTES : end])
        at = end
    return base, found
