"""The real-time look-up's choice of candidates, and when a match is worth flagging.

A look-up runs on every registration (policies `warn` and `refuse`) and every
FindDuplicates call, so its cost must not grow with how common a name is. Scoring a
candidate means reading its sealed row, decrypting and preparing it: that is the cost to
bound. With a plain blocking index a look-up for 张伟 scores every 张伟 whose block is
under the index's size limit (up to 200), and the name's agreement then outweighs
everything else: a namesake in the same city comes out as a likely duplicate.

So, per look-up (`RankedBlocks`, a `KeyStore` for the engine's `DuplicateIndex.lookup`):

* Name keys (full name, phonetic code, pinyin, name + initial) bring in candidates only
  from blocks of at most `NAME_BLOCK` customers; a common name alone never forms a block.
  Namesakes of a common name come in through *compound* keys instead: name + birth year,
  name + locality (`compound_values`, stored beside the engine's keys), and through the
  other keys (phone, email, id, birth date, address).
* Candidates are ranked before anything is decrypted, by the evidence of the keys they
  share: each key counts log2(2^20 / its block's size) bits (a key shared with one other
  customer is strong, one shared with a hundred weak), the name keys only once between
  them (they are spellings of one fact). Only the best `MAX_SCORED` are scored.
* A match is flagged only when it agrees on something besides the name (`worth_flagging`);
  when the name is common (its block has more than `COMMON_NAME` customers) that must be an
  identifying field, exactly: birth date, phone, email, external id or street address. A
  shared city, region or postcode does not tell two 张伟 apart. So a common name's look-up
  scores only the customers sharing an identifying key with it (a phone or a birth date,
  say): however many namesakes live in the same town, none of them is decrypted for that.
  (What this gives up: a common name whose only agreeing field is a phone with a typo.)

Keys are HMACs as all blocking keys are (`BlockingKeyer.digest`, DESIGN invariant 7): the
compound kinds are domain-separated from the engine's by their names.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any

from ledger.projections.dedup import BlockingKeyer, Match, Record
from ledger.projections.dedup.keys import (
    ADDRESS,
    BIRTH_DATE,
    EMAIL,
    EXTERNAL_ID,
    NAME,
    NAME_INITIAL,
    PHONE,
    PHONETIC,
    PINYIN,
    key_values,
)
from ledger.projections.store import ProjectionDatabase, Tx

NAME_BIRTH_YEAR = "name_birth_year"
NAME_LOCALITY = "name_locality"
COMPOUND_KINDS = (NAME_BIRTH_YEAR, NAME_LOCALITY)
# Name-derived kinds ("family_locality": the engine's family name in a town, where it has it).
NAME_KINDS = frozenset({NAME, PHONETIC, PINYIN, NAME_INITIAL, "family_locality"})
CAPPED_KINDS = NAME_KINDS | set(COMPOUND_KINDS)
FULL_NAME_KINDS = frozenset({NAME, PINYIN})  # whose block size says how common a name is
# Keys that can bring in a customer a common name's look-up may flag (`worth_flagging`: an
# identifying field must agree); "street_locality" is the engine's, where it has it.
IDENTIFYING_KINDS = frozenset({EMAIL, PHONE, EXTERNAL_ID, BIRTH_DATE, ADDRESS, "street_locality"})
MAX_NAME_FORMS = 3  # spellings of one name that get compound keys (hanzi, pinyin readings)

# Name and compound keys shared by more customers bring in no candidates (and are read no
# further than that): a common name, or a common name in a big town, is no block.
NAME_BLOCK = 30
COMMON_NAME = 8  # a full name shared by more customers is common: see `worth_flagging`
MAX_SCORED = 30  # candidates decrypted and scored per look-up, best-ranked first
_SCALE_BITS = 20.0  # a key's evidence is log2(2^20 / block size): positive to ~1M customers

# Fields that tell namesakes apart: agreeing on one is evidence about the person, not about
# the name or the neighbourhood. Exactly; or nearly (a typo) where a near miss between two
# people is rare; not for an email, as namesakes' differ by a digit (zhangwei1@,
# john.smith2@), nor among a common name's many bearers for a birth date or an address.
# A phone, an email or an id is the person's own (a changed name is still them); a birth
# date or an address is shared with twins, neighbours, households: it counts only where
# neither name disagrees.
OWN_FIELDS = frozenset({"phone", "email", "external_id"})
SHARED_FIELDS = frozenset({"birth_date", "address_line1"})  # a house number alone is not
NEAR_TELLS = frozenset({"birth_date", "phone", "external_id", "address_line1"})
NEAR_TELLS_COMMON = frozenset({"phone", "external_id"})
# Fields whose disagreement says "another person" unless an identifying field agrees.
CONTRADICTING_FIELDS = frozenset({"birth_date", "external_id"})
NAME_FIELDS = frozenset({"given_name", "family_name"})
# Names that agree: for a common name a typo at most, as "similar" is what different short
# names often are once romanised (Li / Lin, Wang / Wan).
NAMES_AGREE = frozenset({"exact", "close"})  # for a common name's many bearers
NAMES_RESEMBLE = frozenset({"exact", "close", "similar"})  # for others (Jon / John)
STREET_ADDRESS = ("street_number", "address_line1")
# Where someone lives, short of a street address: tells a rare name's bearers apart.
PLACE_FIELDS = frozenset({"locality", "postcode", "address_line2"})
AGREEING_LEVELS = frozenset({"exact", "near", "close"})
AGREEING = frozenset({"near", "close"})  # a typo away
# A birth date's "close" (two digits off, or the same month) is met among a name's bearers:
# it neither tells nor contradicts.
NEARLY = {"birth_date": frozenset({"near"})}


def compound_values(record: Record, *, pinyin: bool = True) -> Iterator[tuple[str, str]]:
    """(kind, plaintext value) of the compound keys: each spelling of the full name with
    the birth year, and with each address's locality. Plaintext: for hashing only."""
    forms = [v for kind, v in key_values(record, pinyin=pinyin) if kind in FULL_NAME_KINDS]
    forms = sorted(dict.fromkeys(forms))[:MAX_NAME_FORMS]
    if not forms:
        return
    year = record.birth_date[:4] if len(record.birth_date) >= 4 else ""
    localities = sorted({(a.country, a.locality) for a in record.addresses if a.locality})
    for form in forms:
        if year:
            yield NAME_BIRTH_YEAR, f"{form}\x1f{year}"
        for country, locality in localities:
            yield NAME_LOCALITY, f"{form}\x1f{country}\x1f{locality}"


def compound_keys(keyer: BlockingKeyer, record: Record) -> frozenset[bytes]:
    pinyin = PINYIN in keyer.kinds
    return frozenset(keyer.digest(k, v) for k, v in compound_values(record, pinyin=pinyin))


def labelled_keys(keyer: BlockingKeyer, record: Record) -> dict[bytes, str]:
    """Every key a look-up of `record` asks for, with its kind."""
    pinyin = PINYIN in keyer.kinds
    kinds = {
        keyer.digest(kind, value): kind
        for kind, value in key_values(record, pinyin=pinyin)
        if kind in keyer.kinds
    }
    for kind, value in compound_values(record, pinyin=pinyin):
        kinds[keyer.digest(kind, value)] = kind
    return kinds


def _bits(size: int) -> float:
    return _SCALE_BITS - math.log2(max(size, 1))


class RankedBlocks:
    """A `KeyStore` for one look-up of one record, read-only: the blocks of the record's
    keys as `duplicate_keys` holds them, cut down to the best-ranked candidates."""

    def __init__(
        self,
        db: ProjectionDatabase,
        table: str,
        kinds: Mapping[bytes, str],
        members_query: Any,
        *,
        exclude: Collection[str] = (),
        max_scored: int = MAX_SCORED,
        name_search: bool = False,
    ) -> None:
        self.db = db
        self.table = table
        self.kinds = kinds
        self._members_query = members_query
        self.exclude = frozenset(exclude)
        self.max_scored = max_scored
        self.name_search = name_search  # a name-only look-up: namesakes are what it asks for
        # Set by `members` (figures of this look-up, no personal data):
        self.common_name = False  # the record's full name is common
        self.considered = 0  # customers sharing a usable block with it
        self.chosen = 0  # of them, how many are scored

    def put(self, customer_id: str, keys: Collection[bytes]) -> None:
        raise TypeError("the duplicate index is written by its projection only")

    def delete(self, customer_id: str) -> None:
        raise TypeError("the duplicate index is written by its projection only")

    def shared_blocks(self, max_block: int) -> Iterator[Collection[str]]:
        raise TypeError("a look-up's blocks are not a batch's")

    def some_customers(self, limit: int) -> list[str]:
        raise TypeError("a look-up's blocks are not a batch's")

    def members(self, keys: Collection[bytes], max_block: int) -> dict[bytes, list[str]]:
        wanted = set(keys) | set(self.kinds)
        names = sorted(k for k in wanted if self.kinds.get(k) in CAPPED_KINDS)
        others = sorted(k for k in wanted if self.kinds.get(k) not in CAPPED_KINDS)
        with self.db.reading() as tx:
            rows = self._read(tx, names, others, max_block)
        blocks: dict[bytes, list[str]] = {}
        for key_hash, customer_id in rows:
            blocks.setdefault(bytes(key_hash), []).append(str(customer_id))
        full_name_sizes = [
            len(blocks.get(k, ())) for k in names if self.kinds[k] in FULL_NAME_KINDS
        ]
        self.common_name = max(full_name_sizes, default=0) > COMMON_NAME
        blocks = {
            k: m
            for k, m in blocks.items()
            if self.kinds.get(k) not in CAPPED_KINDS or len(m) <= NAME_BLOCK
        }
        if self.common_name and not self.name_search:
            # Only an identifying field can flag a namesake, and agreeing on it exactly
            # means sharing its key: the rest (same name, same town) need no decrypting.
            telling = {c for k, m in blocks.items() if self.kinds.get(k) in IDENTIFYING_KINDS
                       for c in m}  # fmt: skip
            blocks = {k: [c for c in m if c in telling] for k, m in blocks.items()}
        chosen = self._best(blocks)
        return {k: [c for c in m if c in chosen] for k, m in blocks.items()}

    def _read(
        self, tx: Tx, names: Sequence[bytes], others: Sequence[bytes], max_block: int
    ) -> list[tuple[Any, ...]]:
        """Members of the other keys' blocks up to `max_block`, and of each name or
        compound key's block its first `NAME_BLOCK + 1` (enough to tell a block too large
        to use): a common name costs as little to read as a rare one."""
        parts: list[str] = []
        params: list[Any] = []
        if others:
            query, values = self._members_query(tx, others, max_block)
            parts.append(f"SELECT * FROM ({query}) AS o")
            params += values
        for key in names:
            parts.append(
                f"SELECT * FROM (SELECT key_hash, customer_id FROM {self.table}"
                " WHERE key_hash = ? LIMIT ?) AS n"
            )
            params += [key, NAME_BLOCK + 1]
        if not parts:
            return []
        return tx.rows(" UNION ALL ".join(parts), params)

    def _best(self, blocks: Mapping[bytes, list[str]]) -> set[str]:
        """The `max_scored` candidates with the most evidence from shared keys."""
        evidence: dict[str, float] = {}
        name_evidence: dict[str, float] = {}
        for key, members in blocks.items():
            bits = _bits(len(members))
            target = name_evidence if self.kinds.get(key) in NAME_KINDS else evidence
            for customer_id in members:
                if customer_id in self.exclude:
                    continue
                if target is name_evidence:
                    name_evidence[customer_id] = max(name_evidence.get(customer_id, 0.0), bits)
                else:
                    evidence[customer_id] = evidence.get(customer_id, 0.0) + bits
        for customer_id, bits in name_evidence.items():
            evidence[customer_id] = evidence.get(customer_id, 0.0) + bits
        self.considered = len(evidence)
        ranked = sorted(evidence.items(), key=lambda item: (-item[1], item[0]))
        chosen = {customer_id for customer_id, _ in ranked[: self.max_scored]}
        self.chosen = len(chosen)
        return chosen


def name_only(record: Record) -> bool:
    """Whether a record has nothing but a name: looking it up is a search by name, where
    agreeing on the name is all there is to ask for."""
    return not (
        record.emails
        or record.phones
        or record.birth_date
        or record.addresses
        or record.external_ids
    )


def worth_flagging(match: Match, *, common_name: bool) -> bool:
    """Whether a scored match may be reported as a likely duplicate. Never with another
    given name in the same family (a household shares an email, a phone, an address; twins
    a birth date).
    Then it must agree exactly on a phone, email or id of the person's own (a new family
    name is still them); or, with the names agreeing (a common name's closely, another's
    at least similarly; a new family name only at the same street address), on a birth
    date or street address, or a typo away on any of those but an email (for a common
    name only on a phone or an id); or, for a name that is not common, on where they live
    (a town, a postcode) while birth dates and ids do not disagree. A
    name alone, a common name and a city, or a shared birth date under another name is
    what namesakes, twins and strangers share. (Not asked for a name-only look-up: see
    `name_only`.) The model's score stays what it is; this only vetoes."""
    levels = {line.field: line.level for line in match.explanation}
    if levels.get("given_name") == "different" and levels.get("family_name") != "different":
        return False  # a household's shared email, phone or address; a twin's birth date
    if any(levels.get(field) == "exact" for field in OWN_FIELDS):
        return True
    agree = NAMES_AGREE if common_name else NAMES_RESEMBLE
    if levels.get("given_name", "exact") not in agree:
        return False
    if levels.get("family_name", "exact") not in agree:
        # Another family name at the same street address: married, still them.
        return not common_name and all(levels.get(f) == "exact" for f in STREET_ADDRESS)
    if any(levels.get(field) == "exact" for field in SHARED_FIELDS):
        return True
    near = NEAR_TELLS_COMMON if common_name else NEAR_TELLS
    if any(levels.get(f) in NEARLY.get(f, AGREEING) for f in near):
        return True
    if common_name:
        return False
    if any(levels.get(field) in ("year", "different") for field in CONTRADICTING_FIELDS):
        return False
    return any(levels.get(field) in AGREEING_LEVELS for field in PLACE_FIELDS)
