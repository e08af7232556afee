"""Blocking keys: which customers are worth comparing at all.

Comparing every customer with every other is quadratic; instead each customer gets a few
keys, and only customers sharing a key become candidate pairs. The keys are chosen so that
two records of one person almost always share at least one even when several fields carry
typos: exact identifiers (email, phone, external id), the name in three spellings
(canonical words, phonetic code, pinyin syllables), the birth date, postcode plus a name
initial, house number plus street, and the town with the family name or the street. A
record without a name still gets its email, phone, id and address keys.

Keys are derived from personal data, so they are stored only as HMAC-SHA256 under a
secret index key (DESIGN invariant 7): without the secret, a leaked index table cannot be
brute-forced back to names or birth dates. The kind is part of the MAC input, so equal
strings of different kinds never collide. 16 bytes of the MAC are kept: collisions at
2^-64 per pair are far below the rate of true key sharing.
"""

from __future__ import annotations

import hashlib
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
FAMILY_LOCALITY = "family_locality"
STREET_LOCALITY = "street_locality"

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
    FAMILY_LOCALITY,
    STREET_LOCALITY,
)
KEY_BYTES = 16
TERM_BYTES = 8  # term-frequency keys: a collision only merges two values' counts
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
    for locality in sorted({a.locality for a in record.addresses if a.locality}):
        # The family name (every reading) in the town, and the street without its number
        # in the town: meet where the postcode, the house number and one name all changed.
        for reading in sorted({family, *record.family_readings} - {""}):
            yield FAMILY_LOCALITY, f"{locality}:{reading}"
    for address in record.addresses:
        if address.line1 and address.locality:
            yield STREET_LOCALITY, f"{address.locality}:{address.line1}"


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

    def term(self, field: str, value: str) -> str:
        """The key a value's frequency is counted under (see `score.TermFrequencies`):
        keyed BLAKE2b, cheap enough to compute per compared pair, and stored with the
        model instead of the value."""
        digest = hashlib.blake2b(
            value.encode(), digest_size=TERM_BYTES, key=self._secret[:64], person=b"ledger-tf"
        )
        digest.update(field.encode())
        return digest.hexdigest()

    def keys(self, record: Record) -> frozenset[bytes]:
        values = key_values(record, pinyin=PINYIN in self.kinds)
        return frozenset(self.digest(kind, value) for kind, value in values if kind in self.kinds)
