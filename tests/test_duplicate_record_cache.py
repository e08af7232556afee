"""The real-time duplicate check keeps prepared candidate records in memory for a few
seconds: it must never match a customer by data it no longer has (changed or erased), and
erasure must drop the customer's record from memory at once."""

from __future__ import annotations

from ledger.domain.profile import validate_registration
from ledger.projections.wiring import duplicate_queries
from tests.helpers import StoreHandle, person

ACTOR = "test-suite"


def _ada(**overrides: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "given_name": "Adelheid",
        "family_name": "Lovelace",
        "emails": ["adelheid.lovelace@example.org"],
        "phones": ["+49 30 7654321"],
        "external_ids": {"CRM": "A-1"},
    }
    return person(**{**fields, **overrides})


def test_cached_candidates_follow_changes_and_erasure(store: StoreHandle) -> None:
    with store.open() as ledger:
        queries = duplicate_queries(ledger)
        queries.record_cache.ttl = 60.0  # long enough that nothing expires during the test
        ada = ledger.register(_ada(), actor=ACTOR)
        ledger.register(person(given_name="Other", family_name="Someone"), actor=ACTOR)
        again = validate_registration(_ada(external_ids={"CRM": "A-2"}), default_region="DE")

        first = queries.check_registration(again, policy="warn")
        assert [m.customer_id for m in first] == [str(ada)]
        assert queries.record_cache.get(str(ada), 1) is not None  # kept for the next check
        assert [m.customer_id for m in queries.check_registration(again, policy="warn")] == [
            str(ada)
        ]

        # Changed into someone else: the cached version-1 record must not match any more.
        ledger.change(
            ada,
            {
                "given_name": "Grace",
                "family_name": "Hopper",
                "emails": ["grace.hopper@example.org"],
                "phones": ["+1 212 555 0100"],
                "birth_date": "1906-12-09",
                "addresses": [
                    {"address_line1": "1 Navy Way", "locality": "Arlington", "country": "US"}
                ],
            },
            actor=ACTOR,
        )
        assert queries.check_registration(again, policy="warn") == []
        grace = validate_registration(
            person(
                given_name="Grace",
                family_name="Hopper",
                emails=["grace.hopper@example.org"],
                phones=["+1 212 555 0100"],
                birth_date="1906-12-09",
                addresses=[
                    {"address_line1": "1 Navy Way", "locality": "Arlington", "country": "US"}
                ],
                external_ids={"CRM": "G-1"},
            ),
            default_region="DE",
        )
        assert [m.customer_id for m in queries.check_registration(grace, policy="warn")] == [
            str(ada)
        ]
        assert queries.record_cache.get(str(ada), 2) is not None

        # Erased: gone from memory at once, and never matched.
        ledger.erase(ada, actor="dpo", legal_basis="GDPR Art. 17")
        assert queries.record_cache.get(str(ada), 2) is None
        assert queries.check_registration(grace, policy="warn") == []
        assert queries.check_registration(again, policy="warn") == []
