"""Blocking keys: which customers are worth comparing at all.

Comparing every customer with every other is quadratic; instead each customer gets a few
keys, and only customers sharing a key become candidate pairs. The keys are chosen so that
two records of one person almost always share at least one even when several fields carry
typos: exact identifiers (email, phone, external id), the name in three spellings
(canonical words, phonetic code, pinyin syllables), the birth date, and postcode plus a
name initial.

Keys are derived from personal data, so they are stored only as HMAC-SHA256 under a
secret index key (DESIGN invariant 7): without the secret, a leaked index table cannot be
brute-forced back to names or birth dates. The kind is part of the MAC input, so equal
strings of different kinds never collide. 16 bytes of the MAC are kept: collisions at
2^-64 per pair are far below the rate of true key sharing.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Iterator

from ledger.projections.dedup.normalise import phonetic
from ledger.projections.dedup.record import Record

EMAIL = "email"
PHONE = "phone"
EXTERNAL_ID = "external_id"
NAME = "name"
PHONETIC = "phonetic"
PINYIN = "pinyin"
NAME_INITIAL = "name_initial"
BIRTH_DATE = "birth_date"
POSTCODE_INITIAL = "postcode_initial"
ADDRESS = "address"

KEY_KINDS: tuple[str, ...] = (
    EMAIL,
    PHONE,
    EXTERNAL_ID,
    NAME,
    PHONETIC,
    PINYIN,
    NAME_INITIAL,
    BIRTH_DATE,
    POSTCODE_INITIAL,
    ADDRESS,
)
KEY_BYTES = 16
MIN_SECRET_BYTES = 16


def key_values(record: Record, *, pinyin: bool = True) -> Iterator[tuple[str, str]]:
    """(kind, plaintext value) of every blocking key of a record. Plaintext: personal data,
    for hashing (below) and tests only, never for storage.

    With `pinyin` off, Chinese characters are used as written in every name key and no
    pinyin key is made: that is the engine without its Chinese-name support, which the
    benchmark compares against.
    """
    for email in record.emails:
        yield EMAIL, email
    for phone in record.phones:
        yield PHONE, phone
    for scheme, value in record.external_ids:
        yield EXTERNAL_ID, f"{scheme}:{value}"
    plain_given, plain_family = "".join(record.given_words), "".join(record.family_words)
    if plain_given or plain_family:
        # Sorted, so that given/family entered the other way round still meet.
        yield NAME, " ".join(sorted((plain_given, plain_family)))
    given, family = (record.given, record.family) if pinyin else (plain_given, plain_family)
    codes = sorted((phonetic(given), phonetic(family)))
    if all(codes):
        yield PHONETIC, " ".join(codes)
    if pinyin:
        for syllables in sorted(record.pinyin):
            yield PINYIN, syllables
    if given and family:
        # Typos tend to sit late in a word: one name whole plus the other's initial meets
        # where both full names differ ("joel ryan" / "joel ryamn").
        yield NAME_INITIAL, " ".join(sorted((given, family[0] + ".")))
        yield NAME_INITIAL, " ".join(sorted((family, given[0] + ".")))
    if record.birth_date:
        yield BIRTH_DATE, record.birth_date
    initials = {name[0] for name in (given, family) if name}
    for postcode in sorted({a.postcode for a in record.addresses if a.postcode}):
        for letter in sorted(initials):
            yield POSTCODE_INITIAL, f"{postcode}:{letter}"
    for address in record.addresses:
        # House number and the street's first word, within the region: survives a typo in
        # the postcode or the rest of the street ("95 leahy place" / "95 leahy lplace").
        street = address.line1.split()[0] if address.line1 else ""
        if address.street_number and len(street) >= 3:
            yield ADDRESS, f"{address.country}:{address.region}:{address.street_number}:{street}"


class BlockingKeyer:
    """Turns records into keyed hashes under one secret; `kinds` selects the key kinds
    (all by default), so the benchmark can measure what each kind contributes."""

    def __init__(self, secret: bytes, kinds: Iterable[str] = KEY_KINDS) -> None:
        if not isinstance(secret, bytes) or len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the index secret must be at least {MIN_SECRET_BYTES} bytes")
        chosen = frozenset(kinds)
        unknown = chosen - set(KEY_KINDS)
        if unknown:
            raise ValueError(f"unknown blocking key kinds: {', '.join(sorted(unknown))}")
        self._secret = secret
        self.kinds = chosen

    def digest(self, kind: str, value: str) -> bytes:
        message = f"{kind}\x1f{value}".encode()
        return hmac.digest(self._secret, message, "sha256")[:KEY_BYTES]

    def keys(self, record: Record) -> frozenset[bytes]:
        values = key_values(record, pinyin=PINYIN in self.kinds)
        return frozenset(self.digest(kind, value) for kind, value in values if kind in self.kinds)
