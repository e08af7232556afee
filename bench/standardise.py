"""The cleaning a competent user does before handing records to a linkage library.

Both baselines (recordlinkage and Splink) read the same frame: one row per record, one
column per field, values standardised as their documentation recommends: names
romanised (hanzi to tone-less pinyin, accents and umlauts folded), case-folded and
stripped of punctuation; dates kept only when they are dates (ISO); phone numbers in
E.164 with the set's default country; emails lower-case; postcodes upper-case without
spaces. The ledger gets the raw rows through `ledger import`: cleaning is its own job.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date
from typing import Any

from bench.sets import ID_COLUMN, LabelledSet

COLUMNS = (
    "given_name",
    "family_name",
    "full_name",  # given + family, for term frequencies on the whole name
    "birth_date",
    "email",
    "phone",
    "street_number",
    "address_line1",
    "address_line2",
    "locality",
    "region",
    "postcode",
    "ssn",
)
_CJK = re.compile(r"[\u3400-\u9fff]")
_NOT_WORD = re.compile(r"[^0-9a-z ]+")
_SPACES = re.compile(r"\s+")


def romanise(text: str) -> str:
    if _CJK.search(text):
        from pypinyin import lazy_pinyin

        text = " ".join(lazy_pinyin(text))
    folded = unicodedata.normalize("NFKD", text.replace("ß", "ss"))
    plain = "".join(c for c in folded if not unicodedata.combining(c)).casefold()
    return _SPACES.sub(" ", _NOT_WORD.sub(" ", plain)).strip()


def _name(text: str) -> str:
    return romanise(text).replace(" ", "")


def _date(text: str) -> str | None:
    try:
        return date.fromisoformat(text.strip()).isoformat()
    except ValueError:
        return None


def _phone(text: str, country: str) -> str | None:
    import phonenumbers

    try:
        number = phonenumbers.parse(text, country)
    except phonenumbers.NumberParseException:
        digits = re.sub(r"\D", "", text)
        return digits or None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def record(values: dict[str, str], country: str) -> dict[str, Any]:
    """One record (its values by ledger field) in the baselines' form."""

    def get(name: str) -> str:
        return values.get(name, "").strip()

    given, family = _name(get("given_name")), _name(get("family_name"))
    return {
        "given_name": given or None,
        "family_name": family or None,
        "full_name": f"{given} {family}".strip() or None,
        "birth_date": _date(get("birth_date")),
        "email": get("emails").casefold() or None,
        "phone": _phone(get("phones"), country) if get("phones") else None,
        "street_number": get("street_number").casefold() or None,
        "address_line1": romanise(get("address_line1")) or None,
        "address_line2": romanise(get("address_line2")) or None,
        "locality": romanise(get("locality")) or None,
        "region": romanise(get("region")) or None,
        "postcode": get("postcode").upper().replace(" ", "") or None,
        "ssn": get("external_id:SSN") or None,
    }


def frame(data: LabelledSet) -> Any:
    """A pandas DataFrame indexed by record id with the columns that the set has."""
    import pandas as pd

    rows = [
        {"unique_id": values[ID_COLUMN], **record(values, data.default_country)}
        for values in data.field_values()
    ]
    table = pd.DataFrame(rows, columns=["unique_id", *COLUMNS]).set_index("unique_id")
    present = [c for c in COLUMNS if table[c].notna().any()]
    return table[present]
