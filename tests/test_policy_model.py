"""The classification table and the policy file format: what every later policy decision
(masking, retention, export) reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.domain.errors import ValidationFailed
from ledger.domain.profile import PERSONAL_FIELDS, PUBLIC_FIELDS
from ledger.policy.classification import (
    BY_FIELD,
    Sensitivity,
    category_of,
    fields_under,
    known_categories,
)
from ledger.policy.model import (
    CROSS_BORDER_TRANSFER,
    LawfulBasis,
    default_policy,
    load_policy_file,
    parse_policy,
)


def test_every_profile_field_has_a_fides_category() -> None:
    taxonomy = known_categories()
    for field in (*PERSONAL_FIELDS, *PUBLIC_FIELDS):
        assert category_of(field) in taxonomy, field
    for field in PERSONAL_FIELDS:
        assert BY_FIELD[field].sensitivity is not Sensitivity.NONE, field


def test_a_parent_category_covers_its_children_only() -> None:
    assert set(fields_under("user.contact")) == {"emails", "phones", "addresses"}
    assert fields_under("user.contact.email") == ("emails",)
    assert fields_under("user.name") == ("given_name", "family_name")
    assert fields_under("user.con") == ()


def test_the_default_policy_is_valid_and_keeps_law_records_longer_than_contacts() -> None:
    policy = default_policy()
    marketing = policy.purpose("marketing.advertising.first_party")
    assert marketing is not None and marketing.lawful_basis is LawfulBasis.CONSENT
    assert marketing.may_use("user.contact.email")
    assert not marketing.may_use("user.demographic.date_of_birth")
    transfer = policy.purpose(CROSS_BORDER_TRANSFER)
    assert transfer is not None and transfer.separate_consent
    contact = policy.rule_for("user.contact.email")
    name = policy.rule_for("user.name.last")
    assert contact is not None and name is not None
    assert contact.keep_for_days < name.keep_for_days


def test_the_most_specific_retention_rule_wins() -> None:
    policy = parse_policy(
        {
            "name": "p",
            "purpose": [],
            "retention": [
                {"category": "user.contact", "keep_for_days": 700, "after": "last_change"},
                {"category": "user.contact.email", "keep_for_days": 30, "after": "registration"},
            ],
        }
    )
    email, phone = (
        policy.rule_for("user.contact.email"),
        policy.rule_for("user.contact.phone_number"),
    )
    assert email is not None and email.keep_for_days == 30
    assert phone is not None and phone.keep_for_days == 700
    assert policy.rule_for("user.name.first") is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"key": "marketing.spam"}, "purpose[0].key"),
        ({"categories": ["user.nam"]}, "purpose[0].categories[0]"),
        ({"lawful_basis": "because"}, "purpose[0].lawful_basis"),
        ({"colour": "red"}, "purpose[0].colour"),
    ],
)
def test_a_bad_purpose_is_refused_naming_the_field(change: dict[str, object], field: str) -> None:
    purpose = {"key": "essential.service", "lawful_basis": "contract", "categories": ["user.name"]}
    with pytest.raises(ValidationFailed) as refused:
        parse_policy({"name": "p", "purpose": [{**purpose, **change}]})
    assert [violation.field for violation in refused.value.violations] == [field]


def test_a_bad_retention_rule_and_a_repeated_purpose_are_refused() -> None:
    purpose = {"key": "essential.service", "lawful_basis": "contract", "categories": ["user.name"]}
    with pytest.raises(ValidationFailed) as refused:
        parse_policy(
            {
                "name": "p",
                "purpose": [purpose, purpose],
                "retention": [
                    {"category": "user.name", "keep_for_days": 0, "after": "registration"}
                ],
            }
        )
    assert {v.field for v in refused.value.violations} == {"retention[0].keep_for_days"}
    with pytest.raises(ValidationFailed) as refused:
        parse_policy({"name": "p", "purpose": [purpose, purpose]})
    assert [v.field for v in refused.value.violations] == ["purpose[1].key"]


def test_yaml_and_toml_files_give_the_same_policy(tmp_path: Path) -> None:
    yaml_file = tmp_path / "policy.yaml"
    yaml_file.write_text(
        "name: p\n"
        "purpose:\n"
        "  - key: essential.service\n"
        "    lawful_basis: contract\n"
        "    categories: [user.name]\n"
        "retention:\n"
        "  - {category: user.contact, keep_for_days: 30, after: last_activity}\n",
        encoding="utf-8",
    )
    toml_file = tmp_path / "policy.toml"
    toml_file.write_text(
        'name = "p"\n'
        "[[purpose]]\n"
        'key = "essential.service"\n'
        'lawful_basis = "contract"\n'
        'categories = ["user.name"]\n'
        "[[retention]]\n"
        'category = "user.contact"\nkeep_for_days = 30\nafter = "last_activity"\n',
        encoding="utf-8",
    )
    assert load_policy_file(yaml_file) == load_policy_file(toml_file)
    broken = tmp_path / "broken.toml"
    broken.write_text("name = ", encoding="utf-8")
    with pytest.raises(ValidationFailed) as refused:
        load_policy_file(broken)
    assert refused.value.violations[0].field == "file"
