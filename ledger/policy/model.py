"""The data policy as a value: purposes with their lawful basis and the categories each may
use, and how long each category is kept from which trigger.

It is plain data so that it can be stored as an event in the log (each applied version is
one event, replayable and covered by the Merkle tree) and checked before it is applied:
`parse_policy` refuses an unknown category, purpose or basis with the field named, the same
way profile input is refused, so a typo in a policy file never silently grants or keeps
nothing.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ledger.domain.errors import FieldViolation, ValidationFailed
from ledger.policy.classification import (
    BY_FIELD,
    Sensitivity,
    covers,
    known_categories,
    known_data_uses,
)

DEFAULT_POLICY_FILE = Path(__file__).with_name("default_policy.toml")
# PIPL Art. 38-39: sending personal information abroad is its own purpose, with its own
# (separate) consent. Fides has no such data use, so it is declared under its parent.
CROSS_BORDER_TRANSFER = "third_party_sharing.cross_border_transfer"
EXTRA_DATA_USES = frozenset({CROSS_BORDER_TRANSFER})


class LawfulBasis(StrEnum):
    """GDPR Art. 6(1) (a)-(f); PIPL Art. 13 names the same grounds in its own words."""

    CONSENT = "consent"
    CONTRACT = "contract"
    LEGAL_OBLIGATION = "legal_obligation"
    VITAL_INTERESTS = "vital_interests"
    PUBLIC_TASK = "public_task"
    LEGITIMATE_INTERESTS = "legitimate_interests"


class Trigger(StrEnum):
    """What a retention period counts from. `last_activity` falls back to the last change
    while a customer has no activity records; `end_of_contract` counts from the customer's
    contract-ended record and never falls due without one."""

    REGISTRATION = "registration"
    LAST_CHANGE = "last_change"
    LAST_ACTIVITY = "last_activity"
    END_OF_CONTRACT = "end_of_contract"


class Purpose(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(description="a Fides data use, e.g. marketing.advertising.first_party")
    name: str = ""
    lawful_basis: LawfulBasis
    categories: tuple[str, ...] = Field(
        description="Fides data categories this purpose may use (a parent covers its children)"
    )
    separate_consent: bool = Field(
        default=False,
        description="PIPL: sensitive data or transfers need a consent of their own",
    )

    def may_use(self, category: str) -> bool:
        return any(covers(allowed, category) for allowed in self.categories)

    @property
    def needs_consent(self) -> bool:
        return self.lawful_basis is LawfulBasis.CONSENT


class RetentionRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    category: str
    keep_for_days: int = Field(gt=0, le=365 * 100)
    after: Trigger
    why: str = ""


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    purposes: tuple[Purpose, ...] = Field(alias="purpose")
    retention: tuple[RetentionRule, ...] = ()

    def purpose(self, key: str) -> Purpose | None:
        return next((purpose for purpose in self.purposes if purpose.key == key), None)

    def rule_for(self, category: str) -> RetentionRule | None:
        """The most specific rule covering a field's category (`user.contact.email` beats
        `user.contact`), or None when the policy keeps it until erasure."""
        matching = [rule for rule in self.retention if covers(rule.category, category)]
        return max(matching, key=lambda rule: rule.category.count("."), default=None)

    def as_data(self) -> dict[str, Any]:
        """The policy as it is stored in its event and shown by `policy show --json`."""
        return self.model_dump(mode="json", by_alias=True)


def parse_policy(data: Mapping[str, Any]) -> Policy:
    """A checked policy, or ValidationFailed naming every bad field (`purpose[2].categories[0]`)."""
    try:
        policy = Policy.model_validate(data)
    except ValidationError as error:
        raise ValidationFailed(
            [
                FieldViolation(_path(detail["loc"]), _reason(detail["type"]))
                for detail in error.errors(include_url=False, include_input=False)
            ]
        ) from None
    violations = _check_vocabulary(policy)
    if violations:
        raise ValidationFailed(violations)
    return policy


def load_policy_file(path: Path) -> Policy:
    """Read a policy from TOML (`.toml`) or YAML (`.yaml`/`.yml`)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in {".yaml", ".yml"}:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ValidationFailed([FieldViolation("file", f"not valid YAML: {error}")]) from None
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ValidationFailed([FieldViolation("file", f"not valid TOML: {error}")]) from None
    if not isinstance(data, dict):
        raise ValidationFailed([FieldViolation("file", "must hold a table of settings")])
    return parse_policy(data)


def default_policy() -> Policy:
    return load_policy_file(DEFAULT_POLICY_FILE)


def _check_vocabulary(policy: Policy) -> list[FieldViolation]:
    categories, uses = known_categories(), known_data_uses() | EXTRA_DATA_USES
    violations: list[FieldViolation] = []
    seen: set[str] = set()
    for index, purpose in enumerate(policy.purposes):
        where = f"purpose[{index}]"
        if purpose.key not in uses:
            violations.append(FieldViolation(f"{where}.key", "not a Fides data use"))
        if purpose.key in seen:
            violations.append(FieldViolation(f"{where}.key", "declared twice"))
        seen.add(purpose.key)
        for position, category in enumerate(purpose.categories):
            if category not in categories:
                violations.append(
                    FieldViolation(f"{where}.categories[{position}]", "not a Fides data category")
                )
        sensitive = any(
            purpose.may_use(entry.category)
            for entry in BY_FIELD.values()
            if entry.sensitivity in (Sensitivity.SENSITIVE, Sensitivity.SPECIAL)
        )
        if sensitive and purpose.needs_consent and not purpose.separate_consent:
            violations.append(
                FieldViolation(
                    f"{where}.separate_consent", "must be true: the purpose uses sensitive data"
                )
            )
    ruled: set[str] = set()
    for index, rule in enumerate(policy.retention):
        if rule.category not in categories:
            violations.append(
                FieldViolation(f"retention[{index}].category", "not a Fides data category")
            )
        if rule.category in ruled:
            violations.append(FieldViolation(f"retention[{index}].category", "ruled twice"))
        ruled.add(rule.category)
    return violations


def _path(location: tuple[int | str, ...]) -> str:
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "policy"


def _reason(kind: str) -> str:
    """Fixed phrases: pydantic's own messages may quote the input."""
    return {
        "missing": "is required",
        "extra_forbidden": "is not a policy setting",
        "enum": "is not one of the allowed values",
        "greater_than": "must be positive",
        "less_than_equal": "is too large",
        "int_parsing": "must be a whole number",
        "int_type": "must be a whole number",
        "string_type": "must be text",
        "tuple_type": "must be a list",
        "bool_parsing": "must be true or false",
        "bool_type": "must be true or false",
    }.get(kind, "is not valid")
