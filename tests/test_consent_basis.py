"""The lawful-basis and masking decisions on their own (pure): a policy, consents in; the
fields a read must mask, and why, out."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ledger.consent.basis import (
    NEEDS_SEPARATE,
    NO_CONSENT,
    WITHDRAWN,
    PurposeNotInPolicy,
    masked_fields,
    missing_basis,
    resolve,
)
from ledger.consent.records import ConsentEntry
from ledger.policy.model import default_policy, parse_policy

POLICY = default_policy()
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def consent(
    purpose: str, given: bool = True, bundle: tuple[str, ...] | None = None
) -> ConsentEntry:
    return ConsentEntry(
        purpose=purpose,
        given=given,
        at=NOW,
        channel="web",
        actor="t",
        version=2,
        bundle=(purpose,) if bundle is None else bundle,
    )


def test_resolve_defaults_refuses_unknown_data_uses_and_keeps_legacy_codes() -> None:
    assert resolve(POLICY, "").key == "essential.service"
    assert resolve(POLICY, "kyc-refresh").key == "essential.service"
    assert resolve(POLICY, "analytics.reporting").key == "analytics.reporting"
    with pytest.raises(PurposeNotInPolicy):
        resolve(POLICY, "marketing.advertising.third_party")


def test_consent_purposes_need_a_consent_in_force() -> None:
    marketing = POLICY.purpose("marketing.advertising.first_party")
    assert marketing is not None
    assert missing_basis(marketing, {}) == NO_CONSENT
    assert missing_basis(marketing, {marketing.key: consent(marketing.key)}) is None
    assert missing_basis(marketing, {marketing.key: consent(marketing.key, False)}) == WITHDRAWN
    contract = POLICY.purpose("essential.service")
    assert contract is not None and missing_basis(contract, {}) is None


def test_a_general_consent_covers_children_but_never_a_separate_one() -> None:
    policy = parse_policy(
        {
            **POLICY.as_data(),
            "purpose": [
                *POLICY.as_data()["purpose"],
                {
                    "key": "marketing.advertising.first_party.contextual",
                    "lawful_basis": "consent",
                    "categories": ["user.contact.email"],
                },
            ],
        }
    )
    child = policy.purpose("marketing.advertising.first_party.contextual")
    abroad = policy.purpose("third_party_sharing.cross_border_transfer")
    assert child is not None and abroad is not None
    parent = "marketing.advertising.first_party"
    assert missing_basis(child, {parent: consent(parent)}) is None
    assert missing_basis(abroad, {"third_party_sharing": consent("third_party_sharing")}) == (
        NEEDS_SEPARATE
    )
    bundled = consent(abroad.key, bundle=(abroad.key, "third_party_sharing"))
    assert missing_basis(abroad, {abroad.key: bundled}) == NEEDS_SEPARATE


def test_masks_name_the_category_the_purpose_may_not_use() -> None:
    analytics = POLICY.purpose("analytics.reporting")
    assert analytics is not None
    masks = masked_fields(analytics, {})
    assert "birth_date" not in masks
    assert masks["emails"] == "purpose_may_not_use:user.contact.email"
