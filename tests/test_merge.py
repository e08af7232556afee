"""Merging duplicates and undoing it, on both stores: events on both customers, exact
restoration, what the projections show, and what erasure does to merged data."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest

from ledger.application import CustomerLedger
from ledger.domain.erased import ERASED
from ledger.domain.errors import (
    CustomerErasedError,
    CustomerMergedError,
    MergeRefused,
    ValidationFailed,
)
from ledger.projections.wiring import customer_queries
from tests.helpers import StoreHandle, person
from tests.test_no_plaintext_at_rest import leaked

ACTOR = "test-suite"
MOVING = ("version", "updated_at")  # what every new event changes


def snapshot(ledger: CustomerLedger, customer_id: UUID) -> dict[str, Any]:
    """The customer as the aggregate and as the current view show it, minus what any
    event moves (version and update time)."""
    aggregate = {k: v for k, v in ledger.get(customer_id).to_json().items() if k not in MOVING}
    record = customer_queries(ledger).get(customer_id)
    assert record is not None
    view = {k: v for k, v in record.to_json().items() if k not in MOVING}
    return {"aggregate": aggregate, "view": view}


def register_pair(ledger: CustomerLedger) -> tuple[UUID, UUID]:
    a = ledger.register(
        person(given_name="Kim", emails=["kim@example.org"], phones=["+4930100100"],
               tags=["vip"], external_ids={"CRM": "A-1"}, birth_date=None),
        actor=ACTOR,
    )  # fmt: skip
    b = ledger.register(
        person(given_name="Kimberly", emails=["kim.b@example.org", "KIM@example.org"],
               phones=["+4930200200"], tags=["web"], external_ids={"CRM": "B-9", "WEB": "w-2"},
               birth_date="1981-02-03", owner="sales.web"),
        actor=ACTOR,
    )  # fmt: skip
    return a, b


def test_merge_then_unmerge_restores_both_exactly(store: StoreHandle) -> None:
    with store.open() as ledger:
        a, b = register_pair(ledger)
        ledger.change(a, {"locale": "de-DE"}, actor=ACTOR)
        before = {a: snapshot(ledger, a), b: snapshot(ledger, b)}

        changed = ledger.merge(a, b, take=["given_name"], actor=ACTOR, reason="dedup-review")
        assert changed == ["birth_date", "emails", "external_ids", "given_name", "phones", "tags"]
        merged = ledger.get(a).personal
        assert isinstance(merged, dict)
        assert merged["given_name"] == "Kimberly"
        assert merged["emails"] == ["kim@example.org", "kim.b@example.org"]  # case-folded union
        assert merged["phones"] == ["+4930100100", "+4930200200"]
        assert merged["external_ids"] == {"CRM": "A-1", "WEB": "w-2"}  # the survivor's CRM id wins
        assert merged["birth_date"] == "1981-02-03"  # a gap filled
        assert ledger.get(a).tags == ["vip", "web"]
        assert ledger.get(b).status == "merged"
        assert [h.event_type for h in ledger.history(b)][-1] == "MergedInto"
        absorbed = ledger.history(a)[-1]
        assert absorbed.event_type == "MergeAbsorbed"
        assert absorbed.details["source_id"] == str(b)
        assert absorbed.reason == "dedup-review"

        queries = customer_queries(ledger)
        assert b not in [r.id for r in queries.list_customers().records]
        assert queries.get(b).merged_into == a  # type: ignore[union-attr]
        assert queries.get(b, follow_merges=True).id == a  # type: ignore[union-attr]
        assert [r.id for r in queries.lookup(external_id="CRM:B-9")] == [a]  # via B's own row
        assert [r.id for r in queries.lookup(email="kim.b@example.org")] == [a]
        with pytest.raises(CustomerMergedError):
            ledger.change(b, {"tags": ["x"]}, actor=ACTOR)

        target, restored, kept = ledger.unmerge(b, actor=ACTOR)
        assert target == a
        assert restored == changed and kept == []
        assert {a: snapshot(ledger, a), b: snapshot(ledger, b)} == before
        assert ledger.get(b).status == "active"
        assert [r.id for r in queries.lookup(email="kim.b@example.org")] == [b]
    with store.open() as reopened:  # replayed from the log alone
        assert {a: snapshot(reopened, a), b: snapshot(reopened, b)} == before


def test_unmerge_keeps_later_edits_and_goes_last_in_first_out(store: StoreHandle) -> None:
    with store.open() as ledger:
        a, b = register_pair(ledger)
        c = ledger.register(person(given_name="Kit", emails=["kit@example.org"]), actor=ACTOR)
        ledger.merge(a, b, actor=ACTOR)
        ledger.merge(a, c, actor=ACTOR)
        with pytest.raises(MergeRefused, match=f"unmerge {c} first"):
            ledger.unmerge(b, actor=ACTOR)
        ledger.unmerge(c, actor=ACTOR)
        ledger.change(a, {"phones": ["+4930300300"]}, actor=ACTOR)  # edited after the merge
        _, restored, kept = ledger.unmerge(b, actor=ACTOR)
        assert kept == ["phones"]
        assert "emails" in restored
        view = ledger.get(a).personal
        assert isinstance(view, dict)
        assert view["phones"] == ["+4930300300"]
        assert view["emails"] == ["kim@example.org"]


def test_refused_merges_write_nothing(store: StoreHandle) -> None:
    with store.open() as ledger:
        a, b = register_pair(ledger)
        head = ledger.recorder.max_notification_id()
        with pytest.raises(MergeRefused):
            ledger.merge(a, a, actor=ACTOR)
        with pytest.raises(ValidationFailed) as bad:
            ledger.merge(a, b, take=["password"], actor=ACTOR)
        assert bad.value.violations[0].field == "take"
        with pytest.raises(MergeRefused):
            ledger.unmerge(b, actor=ACTOR)  # not merged
        ledger.merge(a, b, actor=ACTOR)
        head = ledger.recorder.max_notification_id()
        c = ledger.register(person(), actor=ACTOR)
        head = ledger.recorder.max_notification_id()
        with pytest.raises(CustomerMergedError):
            ledger.merge(c, b, actor=ACTOR)  # already merged
        with pytest.raises(CustomerMergedError):
            ledger.merge(b, c, actor=ACTOR)
        assert ledger.recorder.max_notification_id() == head


def test_erasure_and_merged_customers(store: StoreHandle) -> None:
    """B's values absorbed by A are re-encrypted under A's key: they are A's data now.
    Erasing A while B is merged into it is refused (B would be left hidden and alive);
    erasing B shreds B's own history but not what A took; erasing A then shreds that."""
    with store.open() as ledger:
        a, b = register_pair(ledger)
        ledger.merge(a, b, actor=ACTOR)
        with pytest.raises(MergeRefused, match=str(b)):
            ledger.erase(a, actor="dpo", legal_basis="GDPR Art. 17")

        ledger.erase(b, actor="dpo", legal_basis="GDPR Art. 17")
        assert ledger.get(b).personal is ERASED
        assert all(h.personal in (None, ERASED) for h in ledger.history(b))
        survivor = ledger.get(a).personal
        assert isinstance(survivor, dict)
        assert "kim.b@example.org" in survivor["emails"]  # the copy under A's key
        with pytest.raises(CustomerErasedError):
            ledger.unmerge(b, actor=ACTOR)
        queries = customer_queries(ledger)
        assert queries.get(b).status == "erased"  # type: ignore[union-attr]
        assert [r.id for r in queries.lookup(email="kim.b@example.org")] == [a]

        ledger.erase(a, actor="dpo", legal_basis="GDPR Art. 17")
        assert ledger.get(a).personal is ERASED
        assert queries.lookup(email="kim.b@example.org") == []
        for customer_id in (a, b):
            rows = store.execute(
                f"SELECT COUNT(*) FROM current_view_lookup WHERE customer_id = {store.ph}",
                (str(customer_id),),
            )
            assert rows[0][0] == 0
    needles = {"given_name": "Kimberly", "family_name": "Kimberly", "emails": ["kim.b@example.org"],
               "phones": ["+4930200200"], "addresses": [{"address_line1": "Kimberly"}],
               "external_ids": {"WEB": "w-2"}}  # fmt: skip
    assert leaked(store.dump_bytes(), [needles]) == []


def test_merge_undone_after_merge_was_wrong_then_erasure(store: StoreHandle) -> None:
    """The documented limit: after an unmerge, A's history still holds the values it took
    from B, under A's key, until A is erased too."""
    with store.open() as ledger:
        a, b = register_pair(ledger)
        ledger.merge(a, b, actor=ACTOR)
        ledger.unmerge(b, actor=ACTOR)
        ledger.erase(b, actor="dpo", legal_basis="GDPR Art. 17")
        current = ledger.get(a).personal
        assert isinstance(current, dict)
        assert "kim.b@example.org" not in current["emails"]
        absorbed = next(h for h in ledger.history(a) if h.event_type == "MergeAbsorbed")
        assert isinstance(absorbed.personal, dict)
        assert "kim.b@example.org" in absorbed.personal["emails"]
