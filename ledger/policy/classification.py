"""What kind of personal data each field is: one table, so that masking, retention, export
and per-category destruction all read the same answer.

Categories are keys of the Fides taxonomy (`fideslang`), the field's common vocabulary for
data inventories, so a policy written for other Fides-aware tools reads the same here. The
table holds plain strings and the taxonomy is only imported by the functions that check
them: importing this module must stay cheap (it sits on the read path and the CLI start-up).

Sensitivity follows two laws that single out some data: GDPR Art. 9 "special categories"
(health, biometrics, beliefs, ...) and PIPL Art. 28 "sensitive personal information", which
also covers identity document numbers and financial accounts. A sensitive category needs a
separate consent under PIPL when the purpose relies on consent.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Sensitivity(StrEnum):
    """How the law treats a category; decides masking defaults and separate consent."""

    PERSONAL = "personal"  # identifies a person (GDPR Art. 4(1), PIPL Art. 4)
    SENSITIVE = "sensitive"  # PIPL Art. 28 sensitive personal information
    SPECIAL = "special"  # GDPR Art. 9 special category (also PIPL-sensitive)
    NONE = "none"  # not personal data: stored readable


@dataclass(frozen=True)
class Classification:
    field: str
    category: str  # a Fides data category key
    sensitivity: Sensitivity
    description: str


# Every field of a customer's profile, and every personal attribute any event carries. An
# event's `personal` attribute is a mapping of these fields, so classifying the fields
# classifies the events; a test fails when a new personal field is missing here.
FIELDS: tuple[Classification, ...] = (
    Classification("given_name", "user.name.first", Sensitivity.PERSONAL, "given name"),
    Classification("family_name", "user.name.last", Sensitivity.PERSONAL, "family name"),
    Classification("emails", "user.contact.email", Sensitivity.PERSONAL, "e-mail addresses"),
    Classification(
        "phones", "user.contact.phone_number", Sensitivity.PERSONAL, "phone numbers (E.164)"
    ),
    Classification("addresses", "user.contact.address", Sensitivity.PERSONAL, "postal addresses"),
    Classification(
        "birth_date", "user.demographic.date_of_birth", Sensitivity.PERSONAL, "date of birth"
    ),
    Classification(
        "external_ids",
        "user.unique_id",
        Sensitivity.PERSONAL,
        "identifiers in other systems (scheme and value)",
    ),
    Classification("locale", "user.demographic.language", Sensitivity.NONE, "preferred language"),
    Classification("tags", "system.operations", Sensitivity.NONE, "labels set by staff"),
)

BY_FIELD: dict[str, Classification] = {entry.field: entry for entry in FIELDS}
PERSONAL_CATEGORIES: tuple[str, ...] = tuple(
    entry.category for entry in FIELDS if entry.sensitivity is not Sensitivity.NONE
)


def category_of(field: str) -> str:
    """The Fides category of a profile field; KeyError names the unclassified field."""
    try:
        return BY_FIELD[field].category
    except KeyError:
        raise KeyError(f"field {field!r} has no data category") from None


def covers(rule_category: str, category: str) -> bool:
    """Whether a category named in a policy covers a field's category: Fides keys form a
    tree, so `user.contact` covers `user.contact.email`."""
    return category == rule_category or category.startswith(rule_category + ".")


def fields_under(rule_category: str) -> tuple[str, ...]:
    """The profile fields a policy category reaches (empty when it reaches none)."""
    return tuple(entry.field for entry in FIELDS if covers(rule_category, entry.category))


def known_categories() -> frozenset[str]:
    """Every data category of the Fides default taxonomy (imports fideslang: ~0.25 s)."""
    from fideslang.default_taxonomy import DEFAULT_TAXONOMY

    return frozenset(category.fides_key for category in DEFAULT_TAXONOMY.data_category)


def known_data_uses() -> frozenset[str]:
    """Every data use (purpose) of the Fides default taxonomy."""
    from fideslang.default_taxonomy import DEFAULT_TAXONOMY

    return frozenset(use.fides_key for use in DEFAULT_TAXONOMY.data_use)
