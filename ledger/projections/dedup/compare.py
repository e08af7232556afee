"""Field-by-field comparison of two records: a similarity in 0..1 and an agreement level.

Similarities are measured with rapidfuzz: Jaro-Winkler for names (short strings where the
first letters matter most), the better of Jaro-Winkler and a token-sort ratio for address
lines (words move around: "unit 3 12 high st" / "12 high st unit 3"), exact comparison with
a "near" level one edit away for postcodes and identifiers (typing errors). Birth dates
have five levels, because how a date disagrees says a lot: one digit or a transposed day
and month is a typing error (near), two digits or the same year and month a worse one
(close), the same year only is weak, and anything else is a different person's date.
Chinese family names are compared in every reading of their first character (区 Qu or Ou),
as blocking does: a form spells the reading the person uses.

Levels, not raw similarities, feed the Fellegi-Sunter model: each level gets its own
estimated likelihood ratio, which is how the model learns from the data (unsupervised) how
telling a "close but not equal" surname is compared with an equal postcode. Level -1 means
the field is missing on either side: it then counts neither for nor against a match.
"""

from __future__ import annotations

from dataclasses import dataclass

from rapidfuzz.distance import OSA, JaroWinkler
from rapidfuzz.fuzz import token_sort_ratio

from ledger.projections.dedup.normalise import name_forms
from ledger.projections.dedup.record import Address, Record

MISSING = -1


@dataclass(frozen=True)
class FieldSpec:
    name: str
    levels: tuple[str, ...]  # from strongest agreement to disagreement


_STRING_LEVELS = ("exact", "close", "similar", "different")
_EDIT_LEVELS = ("exact", "near", "different")
_EXACT_LEVELS = ("exact", "different")
_DATE_LEVELS = ("exact", "near", "close", "year", "different")

FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("given_name", _STRING_LEVELS),
    FieldSpec("family_name", _STRING_LEVELS),
    FieldSpec("birth_date", _DATE_LEVELS),
    FieldSpec("external_id", _EDIT_LEVELS),
    FieldSpec("email", _EDIT_LEVELS),
    FieldSpec("phone", _EDIT_LEVELS),
    FieldSpec("street_number", _EDIT_LEVELS),
    FieldSpec("address_line1", _STRING_LEVELS),
    FieldSpec("address_line2", _STRING_LEVELS),
    FieldSpec("locality", _STRING_LEVELS),
    FieldSpec("postcode", _EDIT_LEVELS),
    FieldSpec("region", _EXACT_LEVELS),
)
FIELD_NAMES: tuple[str, ...] = tuple(spec.name for spec in FIELDS)

CLOSE, SIMILAR = 0.92, 0.80  # string similarity thresholds of the "close"/"similar" levels
NEAR_SIMILARITY = 0.8  # what "one edit away" reports as similarity in explanations
SWAP_MARGIN = 0.05  # swapped name order must be clearly better to be believed

Levels = tuple[int, ...]
Similarities = tuple[float | None, ...]

_jw = JaroWinkler.normalized_similarity
_osa = OSA.distance


def _string_level(similarity: float) -> int:
    if similarity >= 0.999:
        return 0
    if similarity >= CLOSE:
        return 1
    return 2 if similarity >= SIMILAR else 3


def _edit(a: str, b: str) -> tuple[int, float]:
    """exact / one edit (typo, adjacent transposition) / different."""
    if a == b:
        return 0, 1.0
    if min(len(a), len(b)) >= 2 and _osa(a, b, score_cutoff=1) <= 1:
        return 1, NEAR_SIMILARITY
    return 2, 0.0


def _family(x: str, x_readings: tuple[str, ...], y: str, y_readings: tuple[str, ...]) -> float:
    """Jaro-Winkler of two names of which either may be a Chinese family name with other
    readings: the best reading counts."""
    similarity = _jw(x, y)
    if similarity >= 0.999 or not (x_readings or y_readings):
        return similarity
    for left in (x, *x_readings):
        for right in (y, *y_readings):
            similarity = max(similarity, _jw(left, right))
    return similarity


def _given(x: str, y: str) -> float:
    """Jaro-Winkler of two given names, at least "close" when one is a nickname of the
    other (Bill / William): the same name, not a sibling's; "similar" for an initial that
    fits (J / John)."""
    similarity = _jw(x, y)
    if similarity >= CLOSE:
        return similarity
    if y in name_forms(x):
        return CLOSE
    if (len(x) == 1 or len(y) == 1) and x[0] == y[0]:
        return SIMILAR  # an initial: consistent with the name, but says little
    return similarity


def _names(a: Record, b: Record) -> tuple[float | None, float | None]:
    """Jaro-Winkler of given and family names, in whichever order matches better: family-first
    and given-first entries of the same name are common (Chinese names, forms, imports).
    A name held in one field only ("Zhangwei") is compared with the other record's whole
    name in both orders, and reported in the slot it was entered in."""
    ag, af, bg, bf = a.given, a.family, b.given, b.family
    if ag and af and bg and bf:
        ar, br = a.family_readings, b.family_readings
        given, family = _given(ag, bg), _family(af, ar, bf, br)
        crossed_given, crossed_family = _family(ag, (), bf, br), _family(af, ar, bg, ())
        if crossed_given + crossed_family > given + family + SWAP_MARGIN:
            return crossed_given, crossed_family
        return given, family
    if not (ag or af) or not (bg or bf):
        return None, None
    if (ag and af) or (bg and bf):  # one record has both parts, the other only one
        single_in_a = not (ag and af)
        one = (ag or af) if single_in_a else (bg or bf)
        g, f = (bg, bf) if single_in_a else (ag, af)
        similarity = max(_jw(one, g + f), _jw(one, f + g), _jw(one, g), _jw(one, f))
        in_given = bool(ag) if single_in_a else bool(bg)
        return (similarity, None) if in_given else (None, similarity)
    similarity = _jw(ag or af, bg or bf)  # one part each, maybe in different slots
    return (similarity, None) if ag else (None, similarity)


DATE_SIMILARITY = (1.0, NEAR_SIMILARITY, 0.6, 0.3, 0.0)  # per level, for explanations


def _birth_date(a: str, b: str) -> tuple[int, float]:
    """exact / near (one digit, day and month transposed) / close (two digits, or the same
    year and month) / the same year / different."""
    if a == b:
        level = 0
    elif a[:4] == b[:4] and a[5:7] == b[8:10] and a[8:10] == b[5:7]:
        level = 1  # day and month transposed
    else:
        edits = _osa(a.replace("-", ""), b.replace("-", ""), score_cutoff=2)
        if edits <= 1:
            level = 1
        elif edits == 2 or a[:7] == b[:7]:
            level = 2
        else:
            level = 3 if a[:4] == b[:4] else 4
    return level, DATE_SIMILARITY[level]


def _best_edit(left: tuple[str, ...], right: tuple[str, ...]) -> tuple[int, float]:
    best = (2, 0.0)
    for x in left:
        for y in right:
            result = _edit(x, y)
            if result[0] < best[0]:
                best = result
                if best[0] == 0:
                    return best
    return best


def _external_ids(
    a: tuple[tuple[str, str], ...], b: tuple[tuple[str, str], ...]
) -> tuple[int, float] | None:
    """Only ids of the same scheme are comparable; none shared means "missing"."""
    other = dict(b)
    best: tuple[int, float] | None = None
    for scheme, value in a:
        if scheme in other:
            result = _edit(value, other[scheme])
            if best is None or result[0] < best[0]:
                best = result
    return best


def _emails(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[int, float]:
    """Equal canonical address, or one edit / Jaro-Winkler ≥ 0.92 on the same domain."""
    best = (2, 0.0)
    for x in a:
        x_local, _, x_domain = x.rpartition("@")
        for y in b:
            if x == y:
                return 0, 1.0
            y_local, _, y_domain = y.rpartition("@")
            if x_domain == y_domain:
                similarity = _jw(x_local, y_local)
                if similarity >= CLOSE or _osa(x_local, y_local, score_cutoff=1) <= 1:
                    best = (1, max(similarity, NEAR_SIMILARITY))
    return best


def _text(a: str, b: str) -> float:
    similarity = _jw(a, b)
    if similarity < 0.999 and (" " in a or " " in b):
        similarity = max(similarity, token_sort_ratio(a, b) / 100.0)
    return similarity


def _address_similarities(a: Address, b: Address) -> list[tuple[int, float | None]]:
    out: list[tuple[int, float | None]] = []
    out.append(
        _edit(a.street_number, b.street_number)
        if a.street_number and b.street_number
        else (MISSING, None)
    )
    for x, y in ((a.line1, b.line1), (a.line2, b.line2), (a.locality, b.locality)):
        if x and y:
            similarity = _text(x, y)
            out.append((_string_level(similarity), similarity))
        else:
            out.append((MISSING, None))
    out.append(_edit(a.postcode, b.postcode) if a.postcode and b.postcode else (MISSING, None))
    if a.region and b.region:
        out.append((0, 1.0) if a.region == b.region else (1, 0.0))
    else:
        out.append((MISSING, None))
    return out


def _addresses(a: Record, b: Record) -> list[tuple[int, float | None]]:
    """The best-matching pair of addresses (customers may have several)."""
    if not a.addresses or not b.addresses:
        return [(MISSING, None)] * 6
    best: list[tuple[int, float | None]] | None = None
    best_total = -1.0
    for x in a.addresses:
        for y in b.addresses:
            fields = _address_similarities(x, y)
            total = sum(s for _, s in fields if s is not None)
            if total > best_total:
                best, best_total = fields, total
    assert best is not None
    return best


def compare(a: Record, b: Record) -> tuple[Levels, Similarities]:
    """Levels and similarities of every field in `FIELDS` order."""
    levels: list[int] = []
    similarities: list[float | None] = []
    for similarity in _names(a, b):
        levels.append(MISSING if similarity is None else _string_level(similarity))
        similarities.append(similarity)

    pairs: list[tuple[int, float | None] | None] = [
        _birth_date(a.birth_date, b.birth_date) if a.birth_date and b.birth_date else None,
        _external_ids(a.external_ids, b.external_ids),
        _emails(a.emails, b.emails) if a.emails and b.emails else None,
        _best_edit(a.phones, b.phones) if a.phones and b.phones else None,
    ]
    for pair in pairs:
        levels.append(MISSING if pair is None else pair[0])
        similarities.append(None if pair is None else pair[1])
    for level, similarity in _addresses(a, b):
        levels.append(level)
        similarities.append(similarity)
    return tuple(levels), tuple(similarities)


TERM_FIELDS: tuple[str, ...] = (
    "given_name",
    "family_name",
    "birth_date",
    "phone",
    "address_line1",
    "locality",
    "postcode",
)
"""Fields whose exact agreement is weighed by how common the shared value is (a shared
common surname, default birth date or big city is weaker evidence than a rare one)."""
_TERM_INDEX = tuple(FIELD_NAMES.index(name) for name in TERM_FIELDS)


def _shared(left: tuple[str, ...], right: tuple[str, ...]) -> str:
    return next((value for value in left if value and value in right), "")


def term_values(a: Record, b: Record, levels: Levels) -> list[tuple[str, str]]:
    """(field, value) of each `TERM_FIELDS` field on which the pair agrees exactly: the
    values whose frequency adjusts the field's weight. Personal data: for keyed hashing."""
    found: list[tuple[str, str]] = []
    for name, f in zip(TERM_FIELDS, _TERM_INDEX, strict=True):
        if levels[f] != 0:
            continue
        if name == "given_name":
            value = a.given or a.family
        elif name == "family_name":
            value = a.family or a.given
        elif name == "birth_date":
            value = a.birth_date
        elif name == "phone":
            value = _shared(a.phones, b.phones)
        elif name == "address_line1":
            value = _shared(
                tuple(x.line1 for x in a.addresses), tuple(y.line1 for y in b.addresses)
            )
        elif name == "locality":
            value = _shared(
                tuple(x.locality for x in a.addresses), tuple(y.locality for y in b.addresses)
            )
        else:
            value = _shared(
                tuple(x.postcode for x in a.addresses), tuple(y.postcode for y in b.addresses)
            )
        if value:
            found.append((name, value))
    return found


def record_terms(record: Record) -> list[tuple[str, str]]:
    """(field, value) of every `TERM_FIELDS` value a record holds: what term frequencies
    are counted on. Personal data: for keyed hashing only."""
    terms: list[tuple[str, str]] = []
    if record.given:
        terms.append(("given_name", record.given))
    if record.family:
        terms.append(("family_name", record.family))
    if record.birth_date:
        terms.append(("birth_date", record.birth_date))
    terms.extend(("phone", phone) for phone in record.phones)
    for name, values in (
        ("address_line1", {a.line1 for a in record.addresses}),
        ("locality", {a.locality for a in record.addresses}),
        ("postcode", {a.postcode for a in record.addresses}),
    ):
        terms.extend((name, value) for value in sorted(values) if value)
    return terms
